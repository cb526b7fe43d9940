"""Ingest benchmark: `prepare_dataset` against a naive pandas pipeline on a large CFPB-format file.

    .venv/bin/python bench/ingest.py                      # 0.5M and 2M rows, baseline at 2M
    .venv/bin/python bench/ingest.py --sizes 200000 --baseline-size 200000 --no-write

The file is built by resampling the bundled 5,631 labelled rows with new Complaint IDs; half
the rows get no narrative, as in the real export (about 18M rows, fewer than half with a
narrative). The worst case (--worst-case, 4M rows) gives every row a distinct narrative. Resampling makes heavy duplication, which the de-duplication has to deal with.
Each pipeline runs in its own subprocess, which reports its own peak RSS (ru_maxrss).
Writes its section of bench/RESULTS.md between <!-- ingest:start --> and <!-- ingest:end -->.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "data" / "cfpb_sample.csv.gz"
RESULTS = REPO / "bench" / "RESULTS.md"


def build_file(n_rows: int, path: Path, seed: int = 0, no_narrative: float = 0.5, unique: bool = False) -> Path:
    """A CFPB-format CSV of n_rows resampled from the bundled rows, new IDs, some narratives removed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    base = pacsv.read_csv(
        BUNDLED,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={
                c: pa.string()
                for c in [
                    "Date received",
                    "Product",
                    "Sub-product",
                    "Company",
                    "Consumer complaint narrative",
                    "Complaint ID",
                ]
            }
        ),
    )
    rng = np.random.default_rng(seed)
    chunk = 250_000
    with pacsv.CSVWriter(path, base.schema) as writer:
        for start in range(0, n_rows, chunk):
            n = min(chunk, n_rows - start)
            t = base.take(pa.array(rng.integers(0, base.num_rows, n)))
            text = t.column("Consumer complaint narrative").combine_chunks()
            mask = pa.array(rng.random(n) < no_narrative)
            if unique:  # every narrative distinct: the worst case for de-duplication and splitting
                text = pc.binary_join_element_wise(text, pa.array([f"ref {i}" for i in range(start, start + n)]), " ")
            text = pc.if_else(mask, pa.nulls(n, pa.string()), text)
            ids = pa.array(np.arange(10_000_000 + start, 10_000_000 + start + n)).cast(pa.string())
            t = t.set_column(
                t.schema.get_field_index("Consumer complaint narrative"), "Consumer complaint narrative", text
            )
            t = t.set_column(t.schema.get_field_index("Complaint ID"), "Complaint ID", ids)
            writer.write_table(t)
    return path


# -- workers (run in a subprocess each) --------------------------------------------------------
def work_prepare(path: str, out: str) -> dict:
    from ticket_triage.data import DataConfig, prepare_dataset

    m = prepare_dataset(DataConfig(input=Path(path), out_dir=Path(out))).manifest  # defaults: near-duplicates on
    near = m["near_duplicates"]
    return {
        "rows": m["counts"]["rows_read"],
        "kept": m["counts"]["kept"],
        "duplicates": m["dropped"]["duplicate"],
        "near_dup": m["dropped"]["near_duplicate"],
        "near_conflict": m["dropped"]["near_duplicate_conflicting_label"],
        "near_groups": near.get("groups"),
        "near_compared": near.get("texts_compared"),
        "near_seconds": near.get("seconds"),
        "memory_limit": m["plan"]["memory_limit"],
    }


def work_baseline(path: str, out: str) -> dict:
    """The naive way: read everything with pandas, map, de-duplicate, split, write."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from ticket_triage.taxonomy import load_taxonomy

    tax = load_taxonomy("cfpb-6")
    narrative = "Consumer complaint narrative"
    df = pd.read_csv(path, dtype=str, usecols=["Date received", "Product", narrative, "Complaint ID"])
    rows = len(df)
    df = df[df[narrative].notna()]
    df = df.assign(label=df["Product"].map(tax.category_of))
    df = df[df["label"].notna()]
    df["text"] = df.pop(narrative)
    df["norm"] = df["text"].str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
    df = df[df["norm"].str.count(" ") + 1 >= 5]
    n_labels = df.groupby("norm")["label"].nunique()
    df = df[df["norm"].map(n_labels) == 1].drop_duplicates("norm")
    df = df.rename(columns={"Complaint ID": "complaint_id", "Product": "product", "Date received": "date_received"})
    df = df[["text", "label", "complaint_id", "product", "date_received"]]
    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=42)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=42)
    for name, part in (("train", train), ("val", val), ("test", test)):
        part.to_parquet(Path(out) / f"{name}.parquet", index=False)
    return {"rows": rows, "kept": len(df), "duplicates": None}


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child started from a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(kind: str, path: str, out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = (work_prepare if kind == "prepare" else work_baseline)(path, out)
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(info), flush=True)


def run_worker(kind: str, path: Path, out: Path, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(path), str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {
            "kind": kind,
            "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"],
            "wall_s": wall,
        }
    info = json.loads(line[7:])
    info.update(kind=kind, wall_s=wall, rows_per_s=info["rows"] / info["seconds"])
    return info


sys.path.insert(0, str(Path(__file__).resolve().parent))
RSS_BOUND_MB = 1500
SPEED_TARGET = 2.0  # x the pandas baseline's rows/s at 2M rows


def write_results(text: str) -> None:
    from _results import write_section  # shared by every benchmark

    write_section("ingest", text)


def target_lines(results: list[dict]) -> list[str]:
    """One line per target: met or missed, with the figures."""
    out = []
    for p in results:
        if p["kind"] != "prepare" or "error" in p:
            continue
        b = next((b for b in results if b["kind"] == "baseline" and b["size"] == p["size"] and "error" not in b), None)
        rss_ok = p["peak_rss_mb"] < RSS_BOUND_MB
        if p.get("distinct"):
            out.append(
                f"- {p['size']:,} rows, all distinct: peak RSS {p['peak_rss_mb']:,.0f} MB, "
                f"{'under' if rss_ok else '**over**'} the {RSS_BOUND_MB:,} MB bound."
            )
        elif b is not None:
            ratio = p["rows_per_s"] / b["rows_per_s"]
            met = "meets" if ratio >= SPEED_TARGET and rss_ok else "**misses**"
            out.append(
                f"- {p['size']:,} rows: {ratio:.1f}x the baseline's rows/s (target {SPEED_TARGET:.0f}x), "
                f"{p['peak_rss_mb']:,.0f} MB vs {b['peak_rss_mb']:,.0f} MB peak RSS (bound {RSS_BOUND_MB:,} MB): {met} both."
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500_000, 2_000_000])
    ap.add_argument("--baseline-size", type=int, default=2_000_000, help="0 skips the baseline")
    ap.add_argument("--tmp", type=Path, default=None, help="where to build the files (default: system temp)")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument(
        "--worst-case",
        type=int,
        default=4_000_000,
        help="also run prepare on a file of this many rows, every one with a narrative and all distinct (0 skips)",
    )
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    from _results import machine
    from rich.console import Console
    from rich.table import Table

    tmp = Path(tempfile.mkdtemp(prefix="triage-bench-", dir=args.tmp))
    results = []
    try:
        sizes = sorted(set(args.sizes) | ({args.baseline_size} if args.baseline_size else set()))
        for n in sizes:
            path = build_file(n, tmp / f"complaints_{n}.csv")
            mb = path.stat().st_size / 1e6
            if n in args.sizes:
                results.append(
                    {"size": n, "file_mb": mb, **run_worker("prepare", path, tmp / f"out_p_{n}", args.timeout)}
                )
            if n == args.baseline_size:
                results.append(
                    {"size": n, "file_mb": mb, **run_worker("baseline", path, tmp / f"out_b_{n}", args.timeout)}
                )
            path.unlink()
        if args.worst_case:
            n = args.worst_case
            path = build_file(n, tmp / f"distinct_{n}.csv", unique=True, no_narrative=0.0)
            results.append(
                {
                    "size": n,
                    "file_mb": path.stat().st_size / 1e6,
                    "distinct": True,
                    **run_worker("prepare", path, tmp / f"out_u_{n}", args.timeout),
                }
            )
            path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title="ingest: prepare_dataset vs naive pandas")
    for col in (
        "pipeline",
        "input rows",
        "file MB",
        "kept",
        "near-dup dropped (conflicting) / groups",
        "seconds",
        "rows/s",
        "peak RSS MB",
    ):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    lines = [
        "## Ingest (`bench/ingest.py`)",
        "",
        "Synthetic CFPB-format CSV (bundled rows resampled, new IDs, 50% without narrative, so heavy "
        "duplication; the 'all texts distinct' row gives every row a narrative and appends 'ref N' to it, the worst case "
        "for exact de-duplication and for writing the splits, and, as the 5,618 base texts each recur about 700 times "
        "with only the reference changed, a stress test for near-duplicate removal: every copy is a near-duplicate). "
        "`prepare_dataset` runs with its defaults: near-duplicate removal on (Jaccard 0.7, MinHash LSH), "
        "memory limit 'auto'. Peak RSS is each subprocess's VmHWM. "
        f"{machine()}, {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        "| pipeline | input rows | file MB | kept | near-dup dropped (conflicting) / groups | seconds | rows/s | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        name = "prepare_dataset (DuckDB)" if r["kind"] == "prepare" else "naive pandas"
        if r.get("distinct"):
            name += ", all texts distinct"
        if "error" in r:
            table.add_row(
                name, f"{r['size']:,}", f"{r['file_mb']:.0f}", "-", "-", f"{r['wall_s']:.1f}", "failed", str(r["error"])
            )
            lines.append(f"| {name} | {r['size']:,} | {r['file_mb']:.0f} | failed: {r['error']} | | | | |")
            continue
        near = (
            f"{r['near_dup']:,} ({r['near_conflict']:,}) / {r['near_groups']:,} in {r['near_seconds']:.0f} s"
            if r.get("near_groups") is not None
            else "-"
        )
        cells = [
            f"{r['size']:,}",
            f"{r['file_mb']:.0f}",
            f"{r['kept']:,}",
            near,
            f"{r['seconds']:.1f}",
            f"{r['rows_per_s']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]
        table.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    targets = target_lines(results)
    if targets:
        lines += ["", "**Targets.**", "", *targets]
    Console(width=120).print(table)
    print("\n".join(targets))
    if not args.no_write:
        write_results("\n".join(lines))
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
