"""`prepare_dataset`: CFPB exports -> de-duplicated, stratified train/val/test parquet + manifest.

The work happens in DuckDB with a memory limit ("auto": a quarter of the available memory,
256MB-768MB); DuckDB spills to a temporary folder beyond it, and nothing else grows with the
number of rows but a few bytes a row in numpy, so memory stays bounded whatever the input size:

1. stream every input in turn (any mix of formats) as Arrow batches (see reading.py) through
   one COPY into a staged Parquet file in a temporary folder: per row the cleaned model
   input, a hash of its normalised text (lower-case, collapsed whitespace), whether it has
   --min-words words, product, ID, date. Row numbers run on across the inputs, so input i
   holds one contiguous range of them (that is how a row's `source` is known);
2. map products through the taxonomy (a small products table; unknown products are counted
   and reported, or fail with --strict). Every row's fate is one status byte in a numpy array
   indexed by row number (0 kept, else the reason it was dropped), so counts per input are
   bincounts of slices;
3. de-duplicate on the hash across all inputs: one copy is kept (the first in input order) and
   texts whose copies carry different labels are dropped, all copies. Only fixed-width
   columns go through the GROUP BY and JOIN (the texts stay in the staged file);
4. near-duplicates among the kept texts (neardup.py: MinHash LSH on word 3-shingles, texts
   streamed in batches from the staged file, per-band keys on disk): a group with one label
   keeps its first text, a group with conflicting labels is dropped;
5. rank each category's rows by a seeded hash (a DuckDB sort, which spills): the first
   round(n * frac) are the sample, and cumulative rounding of 80/10/10 gives each split its
   rows, so each category's count in each split is within one row of exact;
6. stream the staged file once more, in input order, dealing each kept row to its split's
   Parquet writer: no sort of the texts, and the same inputs and seed give identical splits.
   Split files are written under temporary names and renamed at the end: a failure leaves
   nothing half-written in the out folder.
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

import numpy as np
import pyarrow as pa

from ..errors import DataError, TaxonomyError
from ..taxonomy import Taxonomy, load_taxonomy
from .cleaning import clean_sql, min_words_sql, norm_sql
from .config import DataConfig
from .io import FORMAT_VERSION, SPLITS  # the reader (data/io.py) owns the folder's contract
from .reading import Source, bounded_heap, file_sha256, open_source

MANIFEST = "manifest.json"


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
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[rows]:,} rows"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
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


#: Why a row was dropped; a row's status code is its reason's index + 1 (0: kept).
REASONS = (
    "no_narrative",
    "no_product",
    "dropped_product",
    "unknown_product",
    "too_short",
    "duplicate",
    "conflicting_label",
    "near_duplicate",
    "near_duplicate_conflicting_label",
    "not_sampled",
)
_CODE = {r: i + 1 for i, r in enumerate(REASONS)}
AUTO_MEMORY_MIN = 256 << 20
AUTO_MEMORY_MAX = 768 << 20
NEARDUP_BATCH = 8192  # texts tokenised and hashed at once: 32k made the step's peak 240 MB higher


def memory_plan(cfg: DataConfig) -> dict[str, Any]:
    """DuckDB's memory limit and threads: cfg's, or for "auto" a quarter of the available memory.

    The cap keeps the whole process (DuckDB's buffers plus Arrow batches and the per-row arrays)
    well under 1.5 GB; every step spills or streams beyond it, so a bigger limit only saves time.
    """
    threads = cfg.threads or max(1, os.cpu_count() or 1)
    if cfg.memory_limit != "auto":
        return {"memory_limit": cfg.memory_limit, "memory_limit_from": "--memory-limit", "threads": threads}
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = AUTO_MEMORY_MAX * 4
    limit = int(min(AUTO_MEMORY_MAX, max(AUTO_MEMORY_MIN, available // 4)))
    return {
        "memory_limit": f"{limit >> 20}MB",
        "threads": threads,
        "memory_limit_from": f"auto: a quarter of {available / 2**30:.1f} GiB available, between 256MB and 768MB",
    }


def source_names(paths: tuple[Path, ...]) -> list[str]:
    """Each input's file name, with as many parent folders as it takes to tell equal names apart."""
    names = [p.name for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 64:
        depth += 1
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        names = [
            "/".join(Path(os.path.abspath(p)).parts[-depth:]) if counts[n] > 1 else n for p, n in zip(paths, names)
        ]
    if len(set(names)) < len(names):  # same path spelled twice is refused by DataConfig; be safe anyway
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def _name_the_file(exc: DataError, path: Path) -> DataError:
    msg = str(exc)
    return exc if path.name in msg else type(exc)(f"{path}: {msg}")


def prepare_dataset(config: DataConfig, *, progress: bool = False) -> PrepareResult:
    """Prepare train/val/test parquet files, manifest.json, taxonomy.yaml and a class chart."""
    with bounded_heap():  # while prepare runs, then glibc's setting is put back: see reading.bounded_heap
        return _prepare(config, progress=progress)


@dataclass
class _Run:
    """What one prepare run carries from stage to stage: its inputs, plan and per-row arrays."""

    cfg: DataConfig
    taxonomy: Taxonomy
    names: list[str]
    sources: list[Source]
    plan: dict[str, Any]
    work: Path
    con: Any  # the DuckDB connection, open from staging to the split
    bar: _Progress
    # input i holds rows starts[i]:starts[i+1]
    starts: np.ndarray
    reading: int = 0  # the input being streamed, for an error's message
    n_rows: int = 0
    # every row's fate (0 kept, else its reason's code), category and split (0: none), by row number
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    split_code: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    products: dict[str, dict[str, int]] = field(default_factory=dict)  # rows, unknown, dropped
    near: dict[str, Any] = field(default_factory=dict)

    @property
    def staged_file(self) -> Path:
        return self.work / "staged.parquet"


def _prepare(cfg: DataConfig, *, progress: bool) -> PrepareResult:
    import duckdb

    t0 = time.perf_counter()
    taxonomy = load_taxonomy(cfg.taxonomy)
    names = source_names(cfg.inputs)
    sources = _open_sources(cfg)
    sha: dict[int, str] = {}
    hasher = threading.Thread(
        target=lambda: sha.update((i, file_sha256(p)) for i, p in enumerate(cfg.inputs)), daemon=True
    )
    hasher.start()
    plan = memory_plan(cfg)
    work = Path(tempfile.mkdtemp(prefix="triage-prepare-", dir=str(cfg.temp_dir) if cfg.temp_dir else None))
    plan.update(temp_dir=str(work), spill_dir=str(work / "spill"))
    run = _Run(
        cfg=cfg,
        taxonomy=taxonomy,
        names=names,
        sources=sources,
        plan=plan,
        work=work,
        con=None,
        bar=_Progress(progress, sum(s.stats.bytes_total for s in sources), f"reading {names[0]}"),
        starts=np.zeros(len(sources) + 1, dtype=np.int64),
        near={"threshold": cfg.near_duplicates},
    )
    tmp_paths = {s: cfg.out_dir / f".{s}.parquet.tmp" for s in SPLITS}
    created_out = not cfg.out_dir.exists()
    try:
        run.con = _connect(plan)  # a bad setting fails here as a DataError, below
        _stage(run)
        _map_products(run)
        _deduplicate(run)
        if cfg.near_duplicates is not None:
            _remove_near_duplicates(run)
        _sample_and_split(run)
        files = _write_splits(run, tmp_paths)
    except duckdb.Error as exc:
        _clean_out(cfg.out_dir, tmp_paths, created_out)
        raise DataError(f"preparing {', '.join(names)} failed in DuckDB: {str(exc).splitlines()[0]}") from None
    except BaseException:
        _clean_out(cfg.out_dir, tmp_paths, created_out)
        raise
    finally:
        run.bar.close()
        if run.con is not None:
            run.con.close()
        shutil.rmtree(work, ignore_errors=True)
    hasher.join()
    taxonomy.save(cfg.out_dir / "taxonomy.yaml")
    manifest = _manifest(run, sha=sha, seconds=time.perf_counter() - t0)
    (cfg.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    from .report import plot_class_distribution

    files["chart"] = plot_class_distribution(manifest, cfg.out_dir / "class_distribution.png")
    return PrepareResult(out_dir=cfg.out_dir, manifest=manifest, files=files)


def _open_sources(cfg: DataConfig) -> list[Source]:
    """Every input opened (format, columns) before anything is written; an error names the file."""
    sources = []
    for path in cfg.inputs:
        try:
            sources.append(open_source(path, cfg.text_column, cfg.label_column))
        except DataError as exc:
            raise _name_the_file(exc, path) from None
    return sources


def _connect(plan: dict[str, Any]):
    """An in-memory DuckDB: faster than a file, and beyond memory_limit it spills its blocks
    to temp_directory, so memory stays bounded."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit={_sql_str(plan['memory_limit'])}")
    con.execute(f"SET temp_directory={_sql_str(plan['spill_dir'])}")
    # staged.parquet keeps the input's order, so the splits can be written in that order
    # (deterministic) without sorting the texts
    con.execute("SET preserve_insertion_order=true")
    con.execute("SET enable_progress_bar=false")
    con.execute(f"SET threads={plan['threads']}")
    return con


# -- 1. stream and stage -------------------------------------------------------------------
def _numbered_batches(run: _Run, failure: list[BaseException]):
    """Every input's batches in turn, with a row number column (`rid`) that runs on across them.

    An error is kept in `failure` (re-raised by the caller, naming the input) rather than
    raised into DuckDB, which would turn it into its own error type.
    """
    offset = 0
    done_before = 0
    try:
        for i, src in enumerate(run.sources):
            run.reading = i
            run.starts[i] = offset
            for rb in src.batches:
                n = rb.num_rows
                rid = pa.array(np.arange(offset, offset + n, dtype=np.int64))
                offset += n
                yield pa.RecordBatch.from_arrays([*rb.columns, rid], names=[*rb.schema.names, "rid"])
                run.bar.update(done_before + src.stats.bytes_done, offset, f"reading {run.names[i]}")
            done_before += src.stats.bytes_total
        run.starts[len(run.sources)] = offset
    except DataError as exc:
        failure.append(_name_the_file(exc, run.cfg.inputs[run.reading]))
    except BaseException as exc:  # re-raised with its own type and message
        failure.append(exc)


def _stage(run: _Run) -> None:
    """One COPY of every input's stream into staged.parquet: per row the cleaned text, a hash
    of its normalised form (key), whether it has --min-words words, product, ID, date.

    One COPY consumes every input in turn, so DuckDB spreads the text work over its threads.
    Rows without a narrative are staged too (text NULL), for the counts. key: 64-bit hash of
    the normalised text (collisions ~n^2/2^65: negligible at 18M rows). A Parquet file, not a
    table: streaming into it keeps memory flat (strings appended to a DuckDB table are held
    until it spills), and it compresses.
    """
    import duckdb

    cfg, con = run.cfg, run.con
    failure: list[BaseException] = []
    schema = pa.schema(
        [(name, pa.string()) for name in ("text", "product", "complaint_id", "date_received")] + [("rid", pa.int64())]
    )
    con.register("stream", pa.RecordBatchReader.from_batches(schema, _numbered_batches(run, failure)))
    # no narrative = null or empty; whitespace-only ones count as too short (0 words)
    try:
        con.execute(f"""
            COPY (
                SELECT rid, CASE WHEN clean IS NOT NULL THEN hash({norm_sql("clean")}) END AS key,
                       {min_words_sql("clean", cfg.min_words)} AS long_enough, clean AS text, product, complaint_id, date_received
                FROM (SELECT rid, CASE WHEN text <> '' THEN {clean_sql("text", cfg.clean)} END AS clean,
                             coalesce(trim(product), '') AS product, complaint_id, date_received
                      FROM stream)
            ) TO {_sql_str(str(run.staged_file))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)
        """)
    except duckdb.Error as exc:
        if failure:
            raise failure[0] from None
        raise DataError(f"reading {cfg.inputs[run.reading]} failed in DuckDB: {str(exc).splitlines()[0]}") from None
    con.unregister("stream")
    if failure:
        raise failure[0]
    # Beyond staging, order comes from the row numbers: letting DuckDB drop it saves memory.
    con.execute("SET preserve_insertion_order=false")
    con.execute(f"CREATE VIEW staged AS SELECT * FROM read_parquet({_sql_str(str(run.staged_file))})")
    run.n_rows = int(run.starts[-1])
    for path, src in zip(cfg.inputs, run.sources):
        if src.stats.rows_read == 0:
            raise DataError(
                f"{path} has no readable rows"
                + (f" ({src.stats.broken_rows} broken rows skipped)" if src.stats.broken_rows else "")
                + "; give a file with complaints in it (or leave it out)"
            )
    run.bar.update(sum(s.stats.bytes_total for s in run.sources), run.n_rows, "de-duplicating and splitting")
    # Every row's fate is one byte in `status` and its category one byte in `label`, indexed by
    # row number: per-input counts are then bincounts, and only these arrays (1 byte a row)
    # come into Python, never the texts.
    run.status = np.zeros(run.n_rows, dtype=np.int8)
    run.label = np.full(run.n_rows, -1, dtype=np.int8)


# -- 2. taxonomy ---------------------------------------------------------------------------
def _map_products(run: _Run) -> None:
    """Map every product through the taxonomy (a small products table in DuckDB) and mark the
    rows with no narrative, no usable product or too few words."""
    taxonomy, con = run.taxonomy, run.con
    per_product = con.execute(
        "SELECT product, count(*), count(*) FILTER (WHERE key IS NOT NULL) FROM staged GROUP BY product ORDER BY product"
    ).fetchall()
    unknown: dict[str, int] = {}
    dropped: dict[str, int] = {}
    mapping: list[tuple[str, int, int]] = []  # product, status code (0: mapped), label index
    for product, _total, with_text in per_product:
        if product == "":
            mapping.append((product, _CODE["no_product"], -1))
        elif taxonomy.is_dropped(product):
            mapping.append((product, _CODE["dropped_product"], -1))
            if with_text:
                dropped[product] = int(with_text)
        elif taxonomy.category_of(product) is None:
            mapping.append((product, _CODE["unknown_product"], -1))
            if with_text:  # a product seen only on rows without a narrative costs nothing
                unknown[product] = int(with_text)
        else:
            mapping.append((product, 0, taxonomy.categories.index(taxonomy.category_of(product))))  # type: ignore[arg-type]
    if run.cfg.strict and unknown:
        listed = "; ".join(f"{p!r} ({n} rows)" for p, n in sorted(unknown.items(), key=lambda kv: -kv[1]))
        raise TaxonomyError(
            f"{len(unknown)} product(s) not in taxonomy {taxonomy.name!r}: {listed}. "
            f"Add them to the taxonomy's `products:` (or `drop:`), or run without --strict to count and skip them"
        )
    run.products = {"rows": {p: int(total) for p, total, _ in per_product}, "unknown": unknown, "dropped": dropped}
    con.execute("CREATE TABLE products(product VARCHAR, code TINYINT, label_idx TINYINT)")
    con.executemany("INSERT INTO products VALUES (?, ?, ?)", mapping)
    _fill(
        run,
        f"""
        SELECT s.rid, (CASE WHEN s.key IS NULL THEN {_CODE["no_narrative"]} WHEN p.code <> 0 THEN p.code
                            WHEN NOT s.long_enough THEN {_CODE["too_short"]} END)::TINYINT AS code
        FROM staged s JOIN products p USING (product)
        WHERE s.key IS NULL OR p.code <> 0 OR NOT s.long_enough
    """,
    )


def _fill(run: _Run, sql: str, *, with_label: bool = False) -> None:
    """Set `status` (and `label`) from a query's (rid, code[, label]) rows, streamed."""
    for rb in run.con.sql(sql).to_arrow_reader(1 << 17):
        rid = rb.column(0).to_numpy()
        run.status[rid] = rb.column(1).to_numpy()
        if with_label:
            run.label[rid] = rb.column(2).to_numpy()


# -- 3. exact de-duplication ---------------------------------------------------------------
def _deduplicate(run: _Run) -> None:
    """Keep the first copy (in input order) of each normalised text; drop every copy of a text
    whose copies carry different labels. Leaves `reps`: each kept text with its split rank.

    GROUP BY and JOIN on small fixed-width columns only (no text): both spill under the memory
    limit, which a join carrying the texts did not (it ran out at 1.5M distinct narratives
    with the 768MB default).
    """
    con = run.con
    con.execute("""
        CREATE TABLE elig AS SELECT s.rid, s.key, p.label_idx FROM staged s JOIN products p USING (product)
        WHERE s.key IS NOT NULL AND s.long_enough AND p.code = 0
    """)
    con.execute(
        "CREATE TABLE groups AS SELECT key, min(rid) AS first, min(label_idx) AS lo, max(label_idx) AS hi FROM elig GROUP BY key"
    )
    _fill(
        run,
        f"""
        SELECT e.rid, (CASE WHEN g.lo <> g.hi THEN {_CODE["conflicting_label"]} WHEN e.rid <> g.first THEN {_CODE["duplicate"]}
                            ELSE 0 END)::TINYINT, e.label_idx
        FROM elig e JOIN groups g USING (key)
    """,
        with_label=True,
    )
    # the split rank: a seeded hash of the normalised text's key (md5: stable across versions)
    con.execute(f"""
        CREATE TABLE reps AS SELECT first AS rid, lo AS label_idx, (md5_number(key::VARCHAR || ':{int(run.cfg.seed)}') >> 64)::UBIGINT AS h
        FROM groups WHERE lo = hi
    """)
    con.execute("DROP TABLE groups")
    con.execute("DROP TABLE elig")


# -- 4. near-duplicates --------------------------------------------------------------------
def _remove_near_duplicates(run: _Run) -> None:
    # this step's memory is numpy's and rensa's: DuckDB gives back its buffers meanwhile
    run.con.execute("SET memory_limit='256MB'")
    run.near.update(
        _near_duplicates(
            run.con, run.staged_file, run.status, run.label, run.cfg.near_duplicates, run.work / "lsh", run.bar
        )
    )
    run.con.execute(f"SET memory_limit={_sql_str(run.plan['memory_limit'])}")


# -- 5. stratified sample and split --------------------------------------------------------
def _sample_and_split(run: _Run) -> None:
    """Deal each category's surviving representatives, in rank order, to train/val/test
    (`split_code` 1/2/3) by cumulative bounds; those past the sample are `not_sampled`."""
    status, label = run.status, run.label
    alive = status == 0
    sizes = np.bincount(label[alive].astype(np.int64), minlength=len(run.taxonomy.categories)) if alive.any() else None
    if sizes is None or sizes.sum() == 0:
        dropped_now = _count_reasons(status)
        raise DataError(
            f"no usable rows left in {', '.join(run.names)} after filtering "
            f"({', '.join(f'{r}: {n}' for r, n in dropped_now.items() if n)}); "
            "check --text-column/--label-column, --min-words and the taxonomy"
        )
    del alive
    bounds = [split_bounds(int(n), run.cfg.sample_frac, run.cfg.split) for n in sizes]
    run.split_code = np.zeros(run.n_rows, dtype=np.int8)
    taken = np.zeros(len(sizes), dtype=np.int64)
    # reps in rank order (a sort DuckDB spills); the survivors of the near-duplicate step are
    # numbered per category as they come, and cumulative bounds give each its split
    for rb in run.con.sql("SELECT rid, label_idx FROM reps ORDER BY label_idx, h, rid").to_arrow_reader(1 << 17):
        rid = rb.column(0).to_numpy()
        lab = rb.column(1).to_numpy()
        keep = status[rid] == 0
        rid, lab = rid[keep], lab[keep]
        for li in np.unique(lab):
            sel = rid[lab == li]
            m, b1, b2 = bounds[li]
            r = taken[li] + np.arange(sel.size)
            taken[li] += sel.size
            code = np.where(r < b1, 1, np.where(r < b2, 2, 3)).astype(np.int8)
            code[r >= m] = 0
            run.split_code[sel] = code
            status[sel[r >= m]] = _CODE["not_sampled"]


# -- 6. write ------------------------------------------------------------------------------
def _write_splits(run: _Run, tmp_paths: dict[str, Path]) -> dict[str, Path]:
    """Stream the staged file once, in input order, dealing its rows to three Parquet writers
    by split_code: no sort of the texts, deterministic output. Written under temporary names
    and renamed at the end, so a failure leaves nothing half-written in the out folder."""
    import pyarrow.parquet as pq

    run.con.close()  # DuckDB's part is done: its memory goes back before the texts stream
    run.cfg.out_dir.mkdir(parents=True, exist_ok=True)
    label_dict = pa.array(list(run.taxonomy.categories), pa.string())
    source_dict = pa.array(run.names, pa.string())
    out_schema = pa.schema([(c, pa.string()) for c in OUTPUT_COLUMNS])
    writers = {s: pq.ParquetWriter(tmp_paths[s], out_schema, compression="zstd") for s in SPLITS}
    try:
        for rb in staged_batches(run.staged_file, ["rid", "text", "complaint_id", "product", "date_received"], 1 << 16):
            rid = rb.column(0).to_numpy()
            code = run.split_code[rid]
            for k, split in enumerate(SPLITS, start=1):
                idx = np.flatnonzero(code == k)
                if idx.size:
                    writers[split].write_table(_split_rows(run, rb, rid, idx, label_dict, source_dict, out_schema))
    finally:
        for w in writers.values():
            w.close()
    files = {}
    for split in SPLITS:
        files[split] = run.cfg.out_dir / f"{split}.parquet"
        os.replace(tmp_paths[split], files[split])
    return files


def _split_rows(
    run: _Run, rb: pa.RecordBatch, rid: np.ndarray, idx: np.ndarray, label_dict, source_dict, schema
) -> pa.Table:
    """The output rows of batch `rb` at positions `idx`: its columns plus label and source names."""
    take = pa.array(idx)
    lab = pa.DictionaryArray.from_arrays(pa.array(run.label[rid[idx]]), label_dict).cast(pa.string())
    src = np.searchsorted(run.starts, rid[idx], side="right") - 1
    source_col = pa.DictionaryArray.from_arrays(pa.array(src.astype(np.int32)), source_dict).cast(pa.string())
    return pa.Table.from_arrays(
        [
            rb.column(1).take(take),
            lab,
            rb.column(2).take(take),
            rb.column(3).take(take),
            rb.column(4).take(take),
            source_col,
        ],
        schema=schema,
    )


# -- the manifest: overall and per-input counts, from the status bytes -----------------------
def _count_reasons(codes: np.ndarray) -> dict[str, int]:
    c = np.bincount(codes.astype(np.int64), minlength=len(REASONS) + 1)
    return {r: int(c[i + 1]) for i, r in enumerate(REASONS)}


def _input_record(run: _Run, i: int, sha: dict[int, str]) -> dict[str, Any]:
    path, src = run.cfg.inputs[i], run.sources[i]
    a, b = int(run.starts[i]), int(run.starts[i + 1])
    split_code = run.split_code[a:b]
    return {
        "name": run.names[i],
        "path": str(path.resolve()),
        "format": src.format,
        "bytes": src.stats.bytes_total,
        "sha256": sha.get(i),
        "columns": src.columns,
        "rows_read": b - a,
        "kept": int((split_code != 0).sum()),
        "splits": {s: int((split_code == k).sum()) for k, s in enumerate(SPLITS, start=1)},
        "dropped": _count_reasons(run.status[a:b]),
        "broken_rows": src.stats.broken_rows,
        "undecodable_chars_replaced": src.stats.replaced_chars,
    }


def _manifest(run: _Run, *, sha: dict[int, str], seconds: float) -> dict[str, Any]:
    cfg, taxonomy, sources, names = run.cfg, run.taxonomy, run.sources, run.names
    counts = {}
    for k, split in enumerate(SPLITS, start=1):
        per = np.bincount(run.label[run.split_code == k].astype(np.int64), minlength=len(taxonomy.categories))
        counts[split] = {c: int(per[i]) for i, c in enumerate(taxonomy.categories)}
    inputs = [_input_record(run, i, sha) for i in range(len(sources))]
    broken_examples = [
        dict(e, input=names[i]) if len(sources) > 1 else e
        for i, s in enumerate(sources)
        for e in s.stats.broken_examples
    ][:20]
    return {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # one input: its own record, as before; several: a summary, each one in "inputs"
        "input": inputs[0]
        if len(inputs) == 1
        else {
            "name": f"{len(inputs)} inputs ({', '.join(names)})",
            "count": len(inputs),
            "names": names,
            "format": "+".join(sorted({s.format for s in sources})),
        },
        "inputs": inputs,
        "taxonomy": {"name": taxonomy.name, "file": "taxonomy.yaml", "source": cfg.taxonomy},
        "config": cfg.to_dict(),
        "plan": run.plan,
        "labels": list(taxonomy.categories),
        "columns": list(OUTPUT_COLUMNS),
        "files": {s: f"{s}.parquet" for s in SPLITS},
        "row_order": "input order within each split (shuffle when training)",
        "counts": {
            "rows_read": run.n_rows,
            "kept": sum(sum(c.values()) for c in counts.values()),
            "splits": {s: sum(counts[s].values()) for s in SPLITS},
            "per_split": counts,
            "per_category": {c: {s: counts[s][c] for s in SPLITS} for c in taxonomy.categories},
            "per_product": run.products["rows"],
        },
        "dropped": _count_reasons(run.status),
        "near_duplicates": run.near,
        "unknown_products": dict(sorted(run.products["unknown"].items(), key=lambda kv: (-kv[1], kv[0]))),
        "dropped_products": run.products["dropped"],
        "broken_rows": {
            "count": sum(s.stats.broken_rows for s in sources),
            "examples": broken_examples,
            "note": "records counted from 1 = the CSV header",
        },
        "undecodable_chars_replaced": sum(s.stats.replaced_chars for s in sources),
        "versions": _versions(),
        "seconds": round(seconds, 2),
    }


OUTPUT_COLUMNS = ("text", "label", "complaint_id", "product", "date_received", "source")


def _clean_out(out_dir: Path, tmp_paths: dict[str, Path], created: bool) -> None:
    """Nothing half-written: remove this run's temporary split files (and the folder if it made it)."""
    for p in tmp_paths.values():
        p.unlink(missing_ok=True)
    if created and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()


def _near_duplicates(con, staged_file: Path, status, label, threshold: float, lsh_dir: Path, bar) -> dict[str, Any]:
    """Mark near-duplicates of the kept representatives in `status` (see neardup.py)."""
    import numpy as np

    from .neardup import NUM_PERM, SHINGLE_WORDS, NearDuplicateIndex, resolve_groups, text_shingles

    t = time.perf_counter()
    index = NearDuplicateIndex(threshold, lsh_dir)
    nodes = []
    done = 0
    # texts come from the staged file in batches, in input order: node i is the i-th survivor
    for rb in staged_batches(staged_file, ["rid", "text"]):
        rid = rb.column(0).to_numpy()
        keep = np.flatnonzero(status[rid] == 0)
        done += rb.num_rows
        texts = rb.column(1).take(pa.array(keep))
        # a few thousand texts at a time: their word and shingle arrays are the step's peak
        for i in range(0, keep.size, NEARDUP_BATCH):
            index.add(*text_shingles(con, texts.slice(i, NEARDUP_BATCH)))
        nodes.append(rid[keep])
        bar.update(0, done, "finding near-duplicates")  # rows so far; the bar's bytes are done
    node_rid = np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.int64)
    root = index.components()
    dup, conflict = resolve_groups(root, label[node_rid])
    status[node_rid[dup]] = _CODE["near_duplicate"]
    status[node_rid[conflict]] = _CODE["near_duplicate_conflicting_label"]
    sizes = np.bincount(root, minlength=root.size)
    groups = sizes > 1
    conflict_roots = np.unique(root[conflict])
    return {
        "method": "MinHash LSH (rensa RMinHash signatures, numpy banding, connected components)",
        "shingles": f"{SHINGLE_WORDS} consecutive words, lower-cased ASCII letters and digits",
        "num_perm": NUM_PERM,
        "bands": index.bands,
        "rows_per_band": index.rows,
        "texts_compared": int(root.size),
        "groups": int(groups.sum()),
        "rows_in_groups": int(sizes[groups].sum()),
        "conflicting_groups": int(conflict_roots.size),
        "largest_group": int(sizes.max()) if sizes.size else 0,
        # candidates already in one group are not checked again: they could not change it
        "candidate_pairs": index.candidates,
        "checked_pairs": index.checked,
        "confirmed_pairs": index.confirmed,
        "seconds": round(time.perf_counter() - t, 2),
    }


def staged_batches(path: Path, columns: list[str], batch_size: int = 1 << 15):
    """Record batches of a staged Parquet file, in order, in bounded memory.

    Not pyarrow's default pre-buffering: it keeps every row group's column chunks it has read
    until the file is done, so RSS grew with the file (by about 300 bytes a row of narrative).
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns)


def _versions() -> dict[str, str]:
    import duckdb

    from .. import __version__

    return {
        "ticket_triage": __version__,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
    }
