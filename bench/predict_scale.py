"""Scoring the backlog: `triage predict` in 1 process against `--nproc N`, on the same texts.

The texts are the bundled CFPB narratives (data/*.csv.gz), resampled with replacement to
`--rows` (20,000) and written as one CSV (quoted newlines and all). The model is a folder built
from the embedded all-MiniLM-L6-v2 encoder with an untrained 6-class head (128 tokens, head+tail,
as `triage demo` trains): the repository holds no trained model, and the speed of a forward
pass does not depend on the head's weights. Each configuration runs as a user would run it, a
fresh `python -m ticket_triage predict` command, so the wall time includes start-up, model
loading, the split and the merge; the steady rate is rows over the scoring time alone (for N
processes, over the slowest share), which is what a projection to 18M texts should use.

    python bench/predict_scale.py                      # 1 process, then 2: writes bench/RESULTS.md
    python bench/predict_scale.py --rows 2000 --quick  # a smoke run, nothing written

On a GPU machine the same command adds one process per GPU (`--nproc <GPUs> --device cuda`),
against the single-process CPU figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "predict-scale"
BACKLOG = 18_000_000  # the CFPB database, about 18M complaints


def write_texts(dest: Path, rows: int, seed: int) -> Path:
    import pandas as pd

    frames = [
        pd.read_csv(p, usecols=["Consumer complaint narrative"]) for p in sorted((REPO / "data").glob("*.csv.gz"))
    ]
    texts = pd.concat(frames, ignore_index=True)["Consumer complaint narrative"].dropna()
    texts = texts.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    pd.DataFrame({"id": [f"b{i:06d}" for i in range(rows)], "text": texts}).to_csv(dest, index=False)
    return dest


def build_model(dest: Path, max_length: int) -> Path:
    """The embedded MiniLM encoder under an untrained 6-class head: real speed, meaningless labels."""
    import torch

    from ticket_triage.modeling import ModelMeta, embedded_model_path, load_tokenizer, save_model_folder
    from ticket_triage.modeling import build_model as build
    from ticket_triage.taxonomy import load_taxonomy

    taxonomy = load_taxonomy("cfpb-6")
    torch.manual_seed(0)
    source = embedded_model_path()
    model = build(source, list(taxonomy.categories))
    meta = ModelMeta(labels=list(taxonomy.categories), max_length=max_length, truncation="head+tail")
    return save_model_folder(model, load_tokenizer(source), dest, meta, taxonomy)


def run(model: Path, texts: Path, out: Path, nproc: int, extra: list[str]) -> dict:
    command = [
        sys.executable,
        "-m",
        "ticket_triage",
        "predict",
        "--model",
        str(model),
        "--input",
        str(texts),
        "--out",
        str(out),
        "--batch-size",
        "32",
        *extra,
    ]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    else:
        command += [
            "--work-dir",
            str(out.with_name(out.name + ".parts")),
        ]  # the sharded path in one process: a manifest with its timing
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    load = (
        load_before + os.getloadavg()[0]
    ) / 2  # other work on the machine: the figures are only comparable within a run
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    slowest = max(p["seconds"] for p in manifest["parts"])
    return {
        "nproc": nproc,
        "wall": wall,
        "rows": manifest["rows"],
        "steady": manifest["rows"] / slowest,
        "backend": manifest["backend"],
        "per_process": [p["rows_per_s"] for p in manifest["parts"]],
        "load": load,
    }


def hours(rate: float) -> str:
    h = BACKLOG / rate / 3600
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min"


def table(results: list[dict], gpu_note: str) -> str:
    base = results[0]
    lines = [
        "| configuration | backend | wall s (incl. start-up) | rows/s, wall | rows/s, scoring | per process rows/s | vs 1 process (scoring) | 18M texts, projected | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        label = r.get("label") or (
            f"{r['nproc']} CPU processes x {r['threads']} thread(s)"
            if r["nproc"] > 1
            else f"1 CPU process x {r['threads']} threads"
        )
        lines.append(
            f"| {label} | {r['backend']} | {r['wall']:.1f} | {r['rows'] / r['wall']:.0f} | {r['steady']:.0f} | "
            f"{', '.join(f'{x:.0f}' for x in r['per_process'])} | {r['steady'] / base['steady']:.2f}x | {hours(r['steady'])} | {r['load']:.1f} |"
        )
    if gpu_note:
        lines.append(gpu_note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--nproc", type=int, nargs="+", default=[2], help="process counts to compare with 1 (CPU)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="print only; do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = write_texts(tmp / "backlog.csv", args.rows, args.seed)
        model = build_model(tmp / "model", args.max_length)
        results = []
        for n in [1, *args.nproc]:
            extra = ["--backend", args.backend, "--device", "cpu"]
            result = run(model, texts, tmp / f"cpu{n}.parquet", n, extra)
            result["threads"] = max(1, cores // n)
            results.append(result)
            print(f"{n} process(es): {result['wall']:.1f} s wall, {result['steady']:.0f} rows/s scoring", flush=True)
        gpu_note = ""
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus:
            result = run(model, texts, tmp / "gpu.parquet", gpus, ["--backend", "torch", "--device", "cuda"])
            result["label"], result["threads"] = (
                f"{gpus} GPU process(es), 1 per GPU ({torch.cuda.get_device_name(0)})",
                0,
            )
            results.append(result)
        else:
            gpu_note = "| 1 process per GPU | pending: no GPU lent yet; run `python bench/predict_scale.py` on a GPU machine (adds `--nproc <GPUs> --device cuda --backend torch`) | | | | | | | |"
    body = (
        f"## Scoring the backlog: `bench/predict_scale.py`\n\n{args.rows:,} CFPB narratives (the bundled files resampled), "
        f"embedded MiniLM with an untrained head, {args.max_length} tokens, batch 32, on {cores} CPU cores. Each row is one "
        "`triage predict` command; rows/s, scoring is rows over the slowest process's scoring time (no start-up), "
        "which the 18M projection uses; load avg is the machine's 1-minute load while it ran (other jobs share these cores).\n\n"
        + table(results, gpu_note)
    )
    print(body)
    if not args.quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import write_section

        print(f"wrote {write_section(SECTION, body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
