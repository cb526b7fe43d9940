"""Reading and writing ticket files in chunks: CSV (optionally .gz), JSONL and Parquet.

Every reader yields pandas DataFrames of at most about `chunk_rows` rows, so a file of
millions of rows is processed with bounded memory. CSV columns are read as strings (a
streaming reader cannot re-infer types half-way through a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import DataError

CFPB_TEXT_COLUMN = "Consumer complaint narrative"
DEFAULT_TEXT_COLUMN = "text"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".zst")
CSV_BLOCK_BYTES = 16 << 20  # first block size of the streaming CSV reader (doubled for longer rows)


def file_format(path: str | Path, role: str = "input") -> str:
    """ "csv", "jsonl" or "parquet" from the file name (a .gz/.bz2/.zst suffix is allowed for csv/jsonl)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(f"unsupported {role} file type {Path(path).name!r}: use .csv, .csv.gz, .jsonl or .parquet")
    return fmt


def count_rows(path: str | Path) -> int | None:
    """Row count when it is cheap to know (Parquet metadata), else None."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(str(path)).metadata.num_rows
    return None


def iter_chunks(path: str | Path, chunk_rows: int = 8192) -> Iterator["pd.DataFrame"]:  # noqa: F821
    """DataFrames of about `chunk_rows` rows from a CSV / JSONL / Parquet file, in file order."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        elif fmt == "csv":
            yield from _iter_csv(path, chunk_rows)
        else:
            import pandas as pd

            with pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False, compression="infer") as reader:
                yield from reader
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
        raise


def _iter_csv(path: Path, chunk_rows: int):
    import pyarrow as pa
    from pyarrow import csv

    # A block must hold the longest row (narratives can be huge); start at 16 MB and, if a
    # row straddles two blocks, reopen with twice the block size and skip the rows already yielded.
    block_size = CSV_BLOCK_BYTES
    parse = csv.ParseOptions(newlines_in_values=True)  # narratives hold quoted newlines
    done = 0
    while True:
        read = csv.ReadOptions(block_size=block_size)
        try:
            with csv.open_csv(str(path), read_options=read, parse_options=parse) as probe:
                names = probe.schema.names
            convert = csv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=False)
            seen = 0
            with csv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert) as reader:
                for batch in reader:
                    if seen + batch.num_rows <= done:
                        seen += batch.num_rows
                        continue
                    frame = batch.to_pandas().iloc[max(0, done - seen) :].reset_index(drop=True)
                    seen += batch.num_rows
                    for start in range(0, len(frame), chunk_rows):
                        part = frame.iloc[start : start + chunk_rows].reset_index(drop=True)
                        done += len(part)
                        yield part
            return
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block_size >= 1 << 30:
                raise
            block_size *= 2


def pick_text_column(columns: list[str], text_column: str | None, path: str | Path) -> str:
    """The column holding ticket text: the one asked for, else the CFPB narrative, else `text`."""
    if text_column:
        if text_column not in columns:
            raise DataError(f"{path} has no column {text_column!r}; its columns are: {', '.join(map(str, columns))}")
        return text_column
    for candidate in (CFPB_TEXT_COLUMN, DEFAULT_TEXT_COLUMN):
        if candidate in columns:
            return candidate
    raise DataError(
        f"{path} has neither a {CFPB_TEXT_COLUMN!r} nor a {DEFAULT_TEXT_COLUMN!r} column: pass --text-column (columns: {', '.join(map(str, columns))})"
    )


class ChunkWriter:
    """Appends DataFrames to a CSV / JSONL / Parquet file; writes to `<out>.partial`, renamed on close."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = file_format(self.path, role="output")
        if any(s.lower() in COMPRESSIONS for s in self.path.suffixes[-1:]):
            raise DataError(f"compressed output ({self.path.name}) is not supported: write .csv, .jsonl or .parquet")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self._fh = None
        self._parquet = None
        self._schema = None

    def write(self, frame) -> None:
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                # An all-missing column in the first chunk has Arrow type null; later chunks may
                # hold text there, so fix it as a string column from the start.
                self._schema = pa.schema(
                    [f.with_type(pa.large_string()) if pa.types.is_null(f.type) else f for f in table.schema]
                )
                table = table.cast(self._schema)
                self._parquet = pq.ParquetWriter(str(self.tmp), self._schema)
            elif table.schema != self._schema:
                try:
                    table = table.cast(self._schema)
                except Exception as exc:
                    raise DataError(
                        f"a later chunk's column types differ from the first chunk's ({exc}); write CSV or JSONL instead"
                    ) from None
            self._parquet.write_table(table)
            return
        if self._fh is None:
            self._fh = open(self.tmp, "w", encoding="utf-8", newline="")
            header = True
        else:
            header = False
        if self.format == "csv":
            frame.to_csv(self._fh, index=False, header=header)
        else:
            text = frame.to_json(orient="records", lines=True, force_ascii=False)
            self._fh.write(text if text.endswith("\n") or not text else text + "\n")

    def close(self, ok: bool = True) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._fh is not None:
            self._fh.close()
        if not self.tmp.exists():
            if not ok:
                return
            # No chunk at all: still leave a (header-less) empty file behind.
            self.tmp.write_text("")
        if ok:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def read_labelled(
    path: str | Path, labels: list[str], taxonomy=None, text_column: str | None = None, max_rows: int | None = None
):
    """(texts, label indices into `labels`, rows left out) from a labelled file: a prepared split
    (text, label) or a raw CFPB export whose `Product` maps through the model's taxonomy. The
    reading is `data.read_labelled_file`'s, the one `triage evaluate` uses."""
    import numpy as np

    from ..data import read_labelled_file
    from ..taxonomy import Taxonomy

    taxonomy = taxonomy or Taxonomy(name="model-labels", categories=tuple(labels))
    frame, report = read_labelled_file(path, taxonomy, text_column=text_column, max_rows=max_rows)
    index = {name: i for i, name in enumerate(labels)}
    y = frame["label"].map(index)
    known = y.notna()
    if not known.any():
        raise DataError(f"{path}: no row has a non-empty text and a label the model knows ({', '.join(labels)})")
    left_out = (
        report["no_text"] + sum(report["dropped_products"].values()) + report["unknown_rows"] + int((~known).sum())
    )
    return frame.loc[known, "text"].tolist(), y[known].to_numpy(dtype=np.int64), left_out
