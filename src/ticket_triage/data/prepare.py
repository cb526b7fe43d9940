"""`prepare_dataset`: CFPB export -> de-duplicated, stratified train/val/test parquet + manifest.

The work happens in DuckDB with a memory limit; DuckDB spills to a temporary folder beyond
it, so memory stays bounded whatever the input size:

1. stream the input as Arrow batches (see reading.py) through one COPY into a staged
   Parquet file in a temporary folder: per row the cleaned model input, a hash of its
   normalised text (lower-case, collapsed whitespace), whether it has --min-words words,
   product, ID, date. Only this step touches every row's text;
2. count rows per product (no narrative, too short) and map products through the taxonomy
   (a small products table; unknown products are counted and reported, or fail with
   --strict); drop narratives under --min-words;
3. de-duplicate on the hash: one copy is kept (the first in the file) and texts whose copies
   carry different labels are dropped, all copies;
4. rank each category's rows by a seeded hash: the first round(n * frac) are the sample, and
   cumulative rounding of 80/10/10 gives each split its rows, so each category's count in
   each split is within one row of exact;
5. stream the staged file once more, in input order, dealing each kept row to its split's
   Parquet writer (split and label looked up in two 1-byte-per-row arrays): no sort of the
   texts, and the same input and seed give byte-identical splits.
Only counts and the per-category sizes ever come into Python.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import DataError, TaxonomyError
from ..taxonomy import load_taxonomy
from .cleaning import clean_sql, min_words_sql, norm_sql
from .config import DataConfig
from .reading import file_sha256, open_source

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class PrepareResult:
    out_dir: Path
    manifest: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_bounds(n: int, frac: float, split: tuple[float, float, float]) -> tuple[int, int, int]:
    """(sample size, end of train, end of val) for a category of n de-duplicated rows.

    Cumulative rounding: each split's count is within one row of its exact share.
    """
    m = _round_half_up(n * frac)
    b1 = _round_half_up(m * split[0])
    b2 = _round_half_up(m * (split[0] + split[1]))
    return m, b1, b2


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class _Progress:
    """A rich progress bar over the input file's bytes; silent when disabled."""

    def __init__(self, enabled: bool, total: int, description: str):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rows]:,} rows"),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
            )
            self._task = self._bar.add_task(description, total=max(total, 1), rows=0)
            self._bar.start()

    def update(self, done: int, rows: int, description: str | None = None) -> None:
        if self._bar is not None:
            kw = {"description": description} if description else {}
            self._bar.update(self._task, completed=done, rows=rows, **kw)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def prepare_dataset(config: DataConfig, *, progress: bool = False) -> PrepareResult:
    """Prepare train/val/test parquet files, manifest.json, taxonomy.yaml and a class chart."""
    import duckdb

    t0 = time.perf_counter()
    cfg = config
    taxonomy = load_taxonomy(cfg.taxonomy)
    source = open_source(cfg.input, cfg.text_column, cfg.label_column)  # DataError on a bad file
    stats = source.stats

    sha: dict[str, str] = {}
    hasher = threading.Thread(target=lambda: sha.setdefault("sha256", file_sha256(cfg.input)), daemon=True)
    hasher.start()

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="triage-prepare-", dir=str(cfg.temp_dir) if cfg.temp_dir else None))
    # An in-memory database: faster than a file, and beyond memory_limit DuckDB spills its
    # blocks to temp_directory, so memory stays bounded.
    con = duckdb.connect(":memory:")
    bar = _Progress(progress, stats.bytes_total, f"reading {cfg.input.name}")
    try:
        con.execute(f"SET memory_limit={_sql_str(cfg.memory_limit)}")
        con.execute(f"SET temp_directory={_sql_str(str(work / 'spill'))}")
        # staged.parquet keeps the input's order, so the splits can be written in that order
        # (deterministic) without sorting the texts
        con.execute("SET preserve_insertion_order=true")
        con.execute("SET enable_progress_bar=false")
        con.execute(f"SET threads={cfg.threads or max(1, os.cpu_count() or 1)}")

        # -- 1. stream and stage -------------------------------------------------------
        # One COPY consumes the whole Arrow stream, so DuckDB spreads the text work over
        # its threads. Rows without a narrative are staged too (text NULL), for the counts.
        # key: 64-bit hash of the normalised text (collisions ~n^2/2^65: negligible at 18M rows)
        failure: list[BaseException] = []

        def numbered_batches():
            import numpy as np

            offset = 0
            try:
                for rb in source.batches:
                    n = rb.num_rows
                    rid = pa.array(np.arange(offset, offset + n, dtype=np.int64))
                    offset += n
                    yield pa.RecordBatch.from_arrays([*rb.columns, rid], names=[*rb.schema.names, "rid"])
                    bar.update(stats.bytes_done, stats.rows_read)
            except BaseException as exc:  # re-raised below, with its own type and message
                failure.append(exc)

        schema = pa.schema([(name, pa.string()) for name in ("text", "product", "complaint_id", "date_received")] + [("rid", pa.int64())])
        stream = pa.RecordBatchReader.from_batches(schema, numbered_batches())
        con.register("stream", stream)
        # no narrative = null or empty; whitespace-only ones count as too short (0 words)
        # Staged rows go to a Parquet file, not a table: streaming into it keeps memory flat
        # (strings appended to a DuckDB table are held until it spills), and it compresses.
        staged_file = work / "staged.parquet"
        con.execute(f"""
            COPY (
                SELECT rid, CASE WHEN clean IS NOT NULL THEN hash({norm_sql('clean')}) END AS key,
                       {min_words_sql('clean', cfg.min_words)} AS long_enough, clean AS text, product, complaint_id, date_received
                FROM (SELECT rid, CASE WHEN text <> '' THEN {clean_sql('text', cfg.clean)} END AS clean,
                             coalesce(trim(product), '') AS product, complaint_id, date_received
                      FROM stream)
            ) TO {_sql_str(str(staged_file))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)
        """)
        con.unregister("stream")
        con.execute(f"CREATE VIEW staged AS SELECT * FROM read_parquet({_sql_str(str(staged_file))})")
        if failure:
            raise failure[0]
        if stats.rows_read == 0:
            raise DataError(
                f"{cfg.input.name} has no readable rows"
                + (f" ({stats.broken_rows} broken rows skipped)" if stats.broken_rows else "")
                + "; give a file with complaints in it"
            )
        bar.update(stats.bytes_total, stats.rows_read, "de-duplicating and splitting")

        # -- 2. taxonomy ----------------------------------------------------------------
        per_product = con.execute(
            "SELECT product, count(*), count(*) FILTER (WHERE key IS NULL), count(*) FILTER (WHERE key IS NOT NULL), "
            "count(*) FILTER (WHERE NOT long_enough) FROM staged GROUP BY product ORDER BY product"
        ).fetchall()
        dropped = {k: 0 for k in ("no_narrative", "no_product", "dropped_product", "unknown_product", "too_short",
                                  "duplicate", "conflicting_label", "not_sampled")}
        unknown_products: dict[str, int] = {}
        dropped_products: dict[str, int] = {}
        product_rows: dict[str, int] = {}
        mapping: list[tuple[str, str, int]] = []
        for product, total, no_text, with_text, short in per_product:
            product_rows[product] = int(total)
            dropped["no_narrative"] += int(no_text)
            with_text, short = int(with_text), int(short)
            if product == "":
                dropped["no_product"] += with_text
            elif taxonomy.is_dropped(product):
                dropped["dropped_product"] += with_text
                if with_text:
                    dropped_products[product] = with_text
            elif taxonomy.category_of(product) is None:
                dropped["unknown_product"] += with_text
                if with_text:  # a product seen only on rows without a narrative costs nothing
                    unknown_products[product] = with_text
            else:
                cat = taxonomy.category_of(product)
                mapping.append((product, cat, taxonomy.categories.index(cat)))  # type: ignore[arg-type]
                dropped["too_short"] += short
        if cfg.strict and unknown_products:
            listed = "; ".join(f"{p!r} ({n} rows)" for p, n in sorted(unknown_products.items(), key=lambda kv: -kv[1]))
            raise TaxonomyError(
                f"{len(unknown_products)} product(s) not in taxonomy {taxonomy.name!r}: {listed}. "
                f"Add them to the taxonomy's `products:` (or `drop:`), or run without --strict to count and skip them"
            )
        con.execute("CREATE TABLE products(product VARCHAR, label VARCHAR, label_idx INTEGER)")
        if mapping:
            con.executemany("INSERT INTO products VALUES (?, ?, ?)", mapping)

        # -- 3. de-duplicate ------------------------------------------------------------
        con.execute("""
            CREATE TABLE groups AS
            SELECT s.key, min(s.rid) AS rid, count(*) AS n, count(DISTINCT p.label) AS nl
            FROM staged s JOIN products p ON s.product = p.product
            WHERE s.key IS NOT NULL AND s.long_enough  -- at least max(1, min_words) words: an empty model input is never kept
            GROUP BY s.key
        """)
        dup, conflict = con.execute(
            "SELECT coalesce(sum(n - 1) FILTER (WHERE nl = 1), 0)::BIGINT, coalesce(sum(n) FILTER (WHERE nl > 1), 0)::BIGINT FROM groups"
        ).fetchone()
        dropped["duplicate"], dropped["conflicting_label"] = int(dup), int(conflict)
        seed = int(cfg.seed)
        con.execute(f"""
            CREATE TABLE kept AS
            SELECT g.rid, p.label, md5_number(s.text || ':{seed}') AS h
            FROM groups g JOIN staged s ON s.rid = g.rid
                 JOIN products p ON s.product = p.product
            WHERE g.nl = 1
        """)  # no text here: it stays in the staged file until the splits are written
        con.execute("DROP TABLE groups")

        # -- 4. stratified sample and split ---------------------------------------------
        con.execute("CREATE TABLE ranks AS SELECT rid, label, row_number() OVER (PARTITION BY label ORDER BY h, rid) - 1 AS r FROM kept")
        sizes = dict(con.execute("SELECT label, count(*) FROM kept GROUP BY label").fetchall())
        if not sizes:
            raise DataError(
                f"no usable rows left in {cfg.input.name} after filtering "
                f"({', '.join(f'{k}: {v}' for k, v in dropped.items() if v)}); "
                "check --text-column/--label-column, --min-words and the taxonomy"
            )
        bounds = []
        for label, n in sizes.items():
            m, b1, b2 = split_bounds(int(n), cfg.sample_frac, cfg.split)
            dropped["not_sampled"] += int(n) - m
            bounds.append((label, m, b1, b2))
        con.execute("CREATE TABLE bounds(label VARCHAR, m BIGINT, b1 BIGINT, b2 BIGINT)")
        con.executemany("INSERT INTO bounds VALUES (?, ?, ?, ?)", bounds)
        con.execute("""
            CREATE TABLE assigned AS
            SELECT r.rid, k.label, k.h, CASE WHEN r.r < b.b1 THEN 'train' WHEN r.r < b.b2 THEN 'val' ELSE 'test' END AS split
            FROM ranks r JOIN bounds b USING (label) JOIN kept k USING (rid) WHERE r.r < b.m
        """)
        counts = {s: {c: 0 for c in taxonomy.categories} for s in SPLITS}
        for split, label, n in con.execute("SELECT split, label, count(*) FROM assigned GROUP BY ALL").fetchall():
            counts[split][label] = int(n)

        # -- 5. write -------------------------------------------------------------------
        # Two small arrays indexed by row number (1 byte per input row) say each kept row's
        # split and label; the staged file is then streamed once, in input order, and its
        # rows dealt to three Parquet writers. No sort of the texts, deterministic output.
        import numpy as np
        import pyarrow.parquet as pq

        split_code = np.zeros(stats.rows_read, dtype=np.int8)  # 0: not kept
        label_code = np.zeros(stats.rows_read, dtype=np.int8)
        categories_sql = "[" + ", ".join(_sql_str(c) for c in taxonomy.categories) + "]"
        codes = con.sql(f"""
            SELECT rid, (CASE split WHEN 'train' THEN 1 WHEN 'val' THEN 2 ELSE 3 END)::TINYINT AS s,
                   (list_position({categories_sql}, label) - 1)::TINYINT AS l
            FROM assigned
        """).to_arrow_reader(1 << 17)
        for rb in codes:
            rid = rb.column(0).to_numpy()
            split_code[rid] = rb.column(1).to_numpy()
            label_code[rid] = rb.column(2).to_numpy()
        con.close()

        label_dict = pa.array(list(taxonomy.categories), pa.string())
        out_schema = pa.schema([(c, pa.string()) for c in ("text", "label", "complaint_id", "product", "date_received")])
        tmp_paths = {s: cfg.out_dir / f".{s}.parquet.tmp" for s in SPLITS}
        writers = {s: pq.ParquetWriter(tmp_paths[s], out_schema, compression="zstd") for s in SPLITS}
        try:
            staged_pf = pq.ParquetFile(staged_file)
            for rb in staged_pf.iter_batches(batch_size=1 << 16, columns=["rid", "text", "complaint_id", "product", "date_received"]):
                rid = rb.column(0).to_numpy()
                code = split_code[rid]
                for k, split in enumerate(SPLITS, start=1):
                    idx = np.flatnonzero(code == k)
                    if idx.size == 0:
                        continue
                    take = pa.array(idx)
                    label = pa.DictionaryArray.from_arrays(pa.array(label_code[rid[idx]]), label_dict).cast(pa.string())
                    writers[split].write_table(pa.Table.from_arrays(
                        [rb.column(1).take(take), label, rb.column(2).take(take), rb.column(3).take(take), rb.column(4).take(take)],
                        schema=out_schema,
                    ))
        finally:
            for w in writers.values():
                w.close()
        files = {}
        for split in SPLITS:
            path = cfg.out_dir / f"{split}.parquet"
            os.replace(tmp_paths[split], path)
            files[split] = path
    except duckdb.Error as exc:
        raise DataError(f"preparing {cfg.input.name} failed in DuckDB: {str(exc).splitlines()[0]}") from None
    finally:
        bar.close()
        con.close()
        shutil.rmtree(work, ignore_errors=True)

    hasher.join()
    taxonomy.save(cfg.out_dir / "taxonomy.yaml")
    kept_total = sum(sum(c.values()) for c in counts.values())
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "path": str(cfg.input.resolve()),
            "name": cfg.input.name,
            "format": source.format,
            "bytes": stats.bytes_total,
            "sha256": sha.get("sha256"),
            "columns": source.columns,
        },
        "taxonomy": {"name": taxonomy.name, "file": "taxonomy.yaml", "source": cfg.taxonomy},
        "config": cfg.to_dict(),
        "labels": list(taxonomy.categories),
        "columns": ["text", "label", "complaint_id", "product", "date_received"],
        "files": {s: f"{s}.parquet" for s in SPLITS},
        "row_order": "input order within each split (shuffle when training)",
        "counts": {
            "rows_read": stats.rows_read,
            "kept": kept_total,
            "splits": {s: sum(counts[s].values()) for s in SPLITS},
            "per_split": counts,
            "per_category": {c: {s: counts[s][c] for s in SPLITS} for c in taxonomy.categories},
            "per_product": product_rows,
        },
        "dropped": dropped,
        "unknown_products": dict(sorted(unknown_products.items(), key=lambda kv: (-kv[1], kv[0]))),
        "dropped_products": dropped_products,
        "broken_rows": {"count": stats.broken_rows, "examples": stats.broken_examples,
                        "note": "records counted from 1 = the CSV header"},
        "undecodable_chars_replaced": stats.replaced_chars,
        "versions": _versions(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (cfg.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    from .report import plot_class_distribution

    chart = plot_class_distribution(manifest, cfg.out_dir / "class_distribution.png")
    files["chart"] = chart
    return PrepareResult(out_dir=cfg.out_dir, manifest=manifest, files=files)


def _versions() -> dict[str, str]:
    import duckdb

    from .. import __version__

    return {"ticket_triage": __version__, "python": platform.python_version(), "duckdb": duckdb.__version__, "pyarrow": pa.__version__}
