"""Reading the CFPB export in every form it is distributed in, as a stream of Arrow batches.

Every reader yields record batches with four string columns, whatever the source calls them:
``text`` (the narrative), ``product`` (the raw label), ``complaint_id`` and ``date_received``
(null where the source lacks them). Nothing here holds more than one batch in memory.

* CSV, plain / ``.gz`` / ``.zip``: pyarrow's streaming CSV reader over a byte stream that
  replaces undecodable UTF-8 bytes (and counts them). Rows with a wrong number of fields
  (broken quoting) are skipped, counted and their CSV record numbers kept.
* JSON (the CFPB's JSON export: one array of objects) and JSON lines: DuckDB's read_json.
* Parquet: pyarrow's ParquetFile.iter_batches.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import shutil
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pyarrow as pa

from ..errors import DataError

# Candidate source names for each logical column, first match wins (exact, then case-insensitive).
TEXT_COLUMNS = ("Consumer complaint narrative", "complaint_what_happened", "text", "narrative")
# "label" before "product": a prepared split has both, and its `label` is already a category
LABEL_COLUMNS = ("Product", "label", "product")
ID_COLUMNS = ("Complaint ID", "complaint_id", "id")
DATE_COLUMNS = ("Date received", "date_received")
OUTPUT_COLUMNS = ("text", "product", "complaint_id", "date_received")

BATCH_ROWS = 65_536
CSV_BLOCK = 2 << 20  # small blocks: a flat, low memory profile at no cost in speed
MAX_EXAMPLES = 20


@dataclass
class ReadStats:
    """What the reader met on the way: counts the manifest reports."""

    rows_read: int = 0
    replaced_chars: int = 0  # undecodable bytes replaced by U+FFFD
    broken_rows: int = 0  # CSV records with the wrong number of fields, skipped
    broken_examples: list[dict] = field(default_factory=list)
    bytes_total: int = 0
    bytes_done: int = 0

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "undecodable_chars_replaced": self.replaced_chars,
            "broken_rows": self.broken_rows,
            "broken_row_examples": self.broken_examples,
        }


@dataclass
class Source:
    """An opened input: its format, the resolved source column names and a batch iterator."""

    path: Path
    format: str
    columns: dict[str, str | None]
    available: list[str]
    stats: ReadStats
    batches: Iterator[pa.RecordBatch]


# -- format detection ----------------------------------------------------------------------
def _sniff_text(head: bytes) -> str:
    """'json' or 'csv' for decompressed leading bytes; DataError when it is neither."""
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not stripped:
        return "empty"
    if stripped[:1] in (b"[", b"{"):
        return "json"
    if b"\x00" in head[:65536]:
        return "binary"
    text = head[:65536].decode("utf-8", errors="replace")
    if text.count("\ufffd") > max(8, len(text) // 20):
        return "binary"
    first_line = text.split("\n", 1)[0]
    if "," not in first_line and "\t" not in first_line and ";" not in first_line:
        return "binary"
    return "csv"


def detect_format(path: str | Path) -> tuple[str, str | None]:
    """(format, zip member) where format is csv, csv.gz, csv.zip, json, json.gz, json.zip or parquet."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"input file {path} does not exist; check the path (or run `triage data fetch` to download the CFPB file)"
        )
    if path.is_dir():
        raise DataError(f"input {path} is a folder; give a file (complaints.csv, .csv.zip, .csv.gz, .json or .parquet)")
    if path.stat().st_size == 0:
        raise DataError(f"input file {path} is empty (0 bytes); download it again or give another file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return "parquet", None
    if magic[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(65536)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"input file {path} looks gzip-compressed but cannot be decompressed ({exc}); download it again"
            ) from None
        kind = _sniff_text(head)
        if kind == "empty":
            raise DataError(f"input file {path} is empty once decompressed; download it again or give another file")
        if kind == "binary":
            raise DataError(
                f"input file {path} is gzip-compressed but holds no CSV or JSON text; give a CFPB CSV, JSON or Parquet file"
            )
        return f"{kind}.gz", None
    if magic == b"PK\x03\x04" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                members = [i for i in z.infolist() if not i.is_dir()]
                if not members:
                    raise DataError(f"zip file {path} holds no files; download it again")
                preferred = [i for i in members if i.filename.lower().endswith((".csv", ".json", ".jsonl", ".ndjson"))]
                member = max(preferred or members, key=lambda i: i.file_size)
                with z.open(member) as m:
                    head = m.read(65536)
        except zipfile.BadZipFile as exc:
            raise DataError(
                f"input file {path} is not a valid zip archive ({exc}); download it again (`triage data fetch`)"
            ) from None
        kind = _sniff_text(head)
        if kind == "empty":
            raise DataError(f"the file {member.filename} inside {path} is empty; download it again")
        if kind == "binary":
            raise DataError(f"the file {member.filename} inside {path} is not CSV or JSON text; give a CFPB export")
        return f"{kind}.zip", member.filename
    with open(path, "rb") as f:
        head = f.read(65536)
    kind = _sniff_text(head)
    if kind == "empty":
        raise DataError(f"input file {path} is empty (only whitespace); give a CFPB CSV, JSON or Parquet file")
    if kind == "binary":
        raise DataError(
            f"input file {path} is not a CSV, JSON or Parquet file (its first bytes are {magic!r}); give a CFPB export"
        )
    return kind, None


# -- column resolution ---------------------------------------------------------------------
def _pick(available: list[str], explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit is not None:
        if explicit in available:
            return explicit
        lowered = {a.lower(): a for a in available}
        return lowered.get(explicit.lower())
    for c in candidates:
        if c in available:
            return c
    lowered = {a.strip().lower(): a for a in available}
    for c in candidates:
        if c.lower() in lowered:
            return lowered[c.lower()]
    return None


def resolve_columns(
    path: Path, available: list[str], text_column: str | None, label_column: str | None
) -> dict[str, str | None]:
    cols = {
        "text": _pick(available, text_column, TEXT_COLUMNS),
        "product": _pick(available, label_column, LABEL_COLUMNS),
        "complaint_id": _pick(available, None, ID_COLUMNS),
        "date_received": _pick(available, None, DATE_COLUMNS),
    }
    missing = []
    if cols["text"] is None:
        missing.append(repr(text_column) if text_column else f"{TEXT_COLUMNS[0]!r} (text; --text-column)")
    if cols["product"] is None:
        missing.append(repr(label_column) if label_column else f"{LABEL_COLUMNS[0]!r} (label; --label-column)")
    if missing:
        shown = ", ".join(repr(a) for a in available[:30]) + (" ..." if len(available) > 30 else "")
        raise DataError(
            f"{path.name} lacks the column(s) {', '.join(missing)}; columns found: {shown or 'none'}. "
            f"Name yours with --text-column / --label-column"
        )
    return cols


# -- byte streams --------------------------------------------------------------------------
class _Counting(io.RawIOBase):
    """Wraps the on-disk file to report progress (compressed bytes read)."""

    def __init__(self, f: BinaryIO, stats: ReadStats):
        self._f, self._stats = f, stats

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._f.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._stats.bytes_done = self._f.tell()
        return data

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._f.readinto(b)
        self._stats.bytes_done = self._f.tell()
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


class Utf8Repair(io.RawIOBase):
    """A byte stream that passes valid UTF-8 through and replaces undecodable bytes (counted)."""

    _REPL = "\ufffd".encode()

    def __init__(self, raw: BinaryIO, stats: ReadStats, chunk: int = 4 << 20):
        self._raw, self._stats, self._chunk = raw, stats, chunk
        self._pending = b""  # an incomplete multi-byte sequence carried to the next chunk
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        data = self._raw.read(self._chunk)
        final = not data
        data = self._pending + data
        self._pending = b""
        if not data:
            self._eof = True
            return
        try:
            _, consumed = codecs.utf_8_decode(data, "strict", final)
            out = data[:consumed]
            self._pending = data[consumed:]
        except UnicodeDecodeError:
            text, consumed = codecs.utf_8_decode(data, "replace", final)
            self._pending = data[consumed:]
            self._stats.replaced_chars += text.count("\ufffd") - data[:consumed].count(self._REPL)
            out = text.encode("utf-8")
        if final:
            if self._pending:  # a truncated sequence at the very end
                self._stats.replaced_chars += 1
                out += self._REPL
                self._pending = b""
            self._eof = True
        self._buf += out

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buf) < size):
            self._fill()
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_bytes(path: Path, fmt: str, member: str | None, stats: ReadStats) -> BinaryIO:
    """Decompressed byte stream of a csv/json source, progress counted on the file on disk."""
    raw = _Counting(open(path, "rb"), stats)
    if fmt.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if fmt.endswith(".zip"):
        z = zipfile.ZipFile(raw)  # type: ignore[arg-type]
        return z.open(member)  # type: ignore[arg-type]
    return raw  # type: ignore[return-value]


def _csv_header(path: Path, fmt: str, member: str | None) -> list[str]:
    stats = ReadStats()
    try:
        with _open_bytes(path, fmt, member, stats) as f:
            head = f.read(1 << 20)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path.name}: {exc} (the file may be truncated; download it again)") from None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        row = next(csv.reader(io.StringIO(text)))
    except (StopIteration, csv.Error):
        row = []
    names = [c.strip() for c in row]
    if not any(names):
        raise DataError(
            f"input file {path} has no CSV header line; the first line must name the columns (e.g. 'Product', 'Consumer complaint narrative')"
        )
    if "\n" not in text and len(head) < (1 << 20):
        raise DataError(f"input file {path} has a header but no rows; give a file with complaints in it")
    return names


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_STREAM_MMAP_THRESHOLD = 1 << 20
# glibc's own values: its default thresholds, and where its dynamic mmap threshold stops
# rising on 64-bit (with the trim threshold twice that)
_DEFAULT_MMAP, _DEFAULT_TRIM, _DYNAMIC_MMAP_MAX = 128 << 10, 128 << 10, 32 << 20
_heap_scopes = 0  # prepare runs may nest (or run in threads): the outermost one sets and restores
_heap_lock = threading.Lock()


@contextmanager
def bounded_heap():
    """Keep glibc's heap from growing with the input while a large file streams through.

    Streaming allocates many short-lived multi-megabyte buffers; glibc raises its mmap threshold
    after freeing such blocks and then serves them from a heap that fragments, so RSS creeps up
    with the file size. A fixed 1 MiB threshold returns them to the OS at once.

    Scoped, because the same setting makes every tensor above 1 MiB an mmap/munmap pair: model
    work in the same process (`triage demo` prepares, then trains) ran 1.5x slower in training
    and 1.7x in inference, a third of its time in the kernel zeroing pages (2-core AMD EPYC).
    The exit puts back what was there (see `_heap_settings_before`). No effect outside glibc.
    """
    global _heap_scopes
    libc = _libc()
    before = _heap_settings_before()
    change = libc is not None and before[_M_MMAP_THRESHOLD] > _STREAM_MMAP_THRESHOLD
    with _heap_lock:
        if change and _heap_scopes == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _STREAM_MMAP_THRESHOLD)
        _heap_scopes += 1
    try:
        yield
    finally:
        with _heap_lock:
            _heap_scopes -= 1
            if change and _heap_scopes == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, before[_M_MMAP_THRESHOLD])
                libc.mallopt(_M_TRIM_THRESHOLD, before[_M_TRIM_THRESHOLD])


def _heap_settings_before() -> dict[int, int]:
    """glibc's mmap and trim thresholds as this process runs without us.

    glibc has no way to read them back, so they come from where they are set: the user's
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES (fixed values, which we
    restore), else glibc's dynamic threshold, which cannot be switched back on once set: the
    exit then sets what it would have settled at, 32 MiB, with the trim threshold twice that.
    """
    tunables = dict(part.split("=", 1) for part in os.environ.get("GLIBC_TUNABLES", "").split(":") if "=" in part)

    def setting(env: str, tunable: str) -> int | None:
        value = os.environ.get(env) or tunables.get(f"glibc.malloc.{tunable}")
        try:
            return int(value, 0) if value else None
        except ValueError:
            return None

    mmap = setting("MALLOC_MMAP_THRESHOLD_", "mmap_threshold")
    trim = setting("MALLOC_TRIM_THRESHOLD_", "trim_threshold")
    if mmap is None and trim is None:
        return {_M_MMAP_THRESHOLD: _DYNAMIC_MMAP_MAX, _M_TRIM_THRESHOLD: 2 * _DYNAMIC_MMAP_MAX}
    # either one set by the user turns glibc's dynamic thresholds off: the other keeps its default
    return {
        _M_MMAP_THRESHOLD: mmap if mmap is not None else _DEFAULT_MMAP,
        _M_TRIM_THRESHOLD: trim if trim is not None else _DEFAULT_TRIM,
    }


def _libc():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


# -- the readers ---------------------------------------------------------------------------
def _normalise_batch(batch: pa.RecordBatch | pa.Table, columns: dict[str, str | None]) -> pa.RecordBatch:
    n = batch.num_rows
    arrays = []
    for out in OUTPUT_COLUMNS:
        src = columns.get(out)
        if src is None:
            arrays.append(pa.nulls(n, pa.string()))
            continue
        col = batch.column(src)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.type != pa.string():
            if pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            elif pa.types.is_dictionary(col.type):
                col = col.dictionary_decode().cast(pa.string())
            elif pa.types.is_floating(col.type):  # a float ID like 3120796.0 becomes '3120796'
                import pyarrow.compute as pc

                col = (
                    pc.cast(pc.round(col), pa.int64()).cast(pa.string())
                    if out == "complaint_id"
                    else col.cast(pa.string())
                )
            else:
                col = col.cast(pa.string())
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=list(OUTPUT_COLUMNS))


def _csv_batches(
    path: Path, fmt: str, member: str | None, names: list[str], columns: dict[str, str | None], stats: ReadStats
) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    def on_invalid(row) -> str:
        stats.broken_rows += 1
        if len(stats.broken_examples) < MAX_EXAMPLES:
            stats.broken_examples.append(
                {
                    "record": row.number,  # CSV record number, the header being record 1 (None if unknown)
                    "fields": row.actual_columns,
                    "expected_fields": row.expected_columns,
                    "start": row.text[:80],
                }
            )
        return "skip"

    wanted = sorted({c for c in columns.values() if c is not None})
    stream = Utf8Repair(_open_bytes(path, fmt, member, stats), stats)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={c: pa.string() for c in wanted},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            stats.rows_read += batch.num_rows
            yield _normalise_batch(batch, columns)
    except pa.ArrowInvalid as exc:
        msg = str(exc).splitlines()[0]
        raise DataError(f"cannot parse {path.name} as CSV: {msg}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path.name}: {exc} (the file may be truncated; download it again)") from None
    finally:
        stream.close()


def _parquet_batches(path: Path, columns: dict[str, str | None], stats: ReadStats) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    wanted = sorted({c for c in columns.values() if c is not None})
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        stats.rows_read += batch.num_rows
        stats.bytes_done = min(
            stats.bytes_total, stats.bytes_done + max(1, stats.bytes_total // max(1, pf.metadata.num_row_groups))
        )
        yield _normalise_batch(batch, columns)
    stats.bytes_done = stats.bytes_total


def _json_relation_sql(json_path: Path) -> str:
    p = str(json_path).replace("'", "''")
    return f"read_json('{p}', format='auto', records=true, sample_size=20480, maximum_object_size=67108864, union_by_name=true)"


def _json_batches(
    json_path: Path,
    columns: dict[str, str | None],
    types: dict[str, str],
    stats: ReadStats,
    cleanup: Callable[[], None],
) -> Iterator[pa.RecordBatch]:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET memory_limit='512MB'")
        con.execute("SET preserve_insertion_order=true")

        def expr(out: str, src: str | None) -> str:
            if src is None:
                return f"CAST(NULL AS VARCHAR) AS {out}"
            q = '"' + src.replace('"', '""') + '"'
            if types.get(src, "").upper() == "JSON":  # mixed or nested values: unquote strings
                return f"json_extract_string({q}, '$') AS {out}"
            return f"CAST({q} AS VARCHAR) AS {out}"

        sel = ", ".join(expr(out, src) for out, src in columns.items())
        reader = con.sql(f"SELECT {sel} FROM {_json_relation_sql(json_path)}").to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            stats.rows_read += batch.num_rows
            yield _normalise_batch(batch, {c: c for c in OUTPUT_COLUMNS})
        stats.bytes_done = stats.bytes_total
    except duckdb.Error as exc:
        raise DataError(f"cannot read {json_path.name} as JSON: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
        cleanup()


def open_source(path: str | Path, text_column: str | None = None, label_column: str | None = None) -> Source:
    """Open an input file and resolve its columns; iterate `.batches` to stream it."""
    path = Path(path)
    fmt, member = detect_format(path)
    stats = ReadStats(bytes_total=path.stat().st_size)

    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read {path.name} as Parquet: {str(exc).splitlines()[0]}") from None
        available = list(pf.schema_arrow.names)
        columns = resolve_columns(path, available, text_column, label_column)
        if pf.metadata.num_rows == 0:
            raise DataError(f"input file {path} has no rows; give a file with complaints in it")
        return Source(path, fmt, columns, available, stats, _parquet_batches(path, columns, stats))

    if fmt.startswith("json"):
        import duckdb

        json_path, cleanup = path, (lambda: None)
        if fmt == "json.zip":  # DuckDB reads gzip itself; a zip member is extracted to a temp file
            tmp = Path(tempfile.mkdtemp(prefix="triage-json-"))
            json_path = tmp / Path(member or "data.json").name
            with zipfile.ZipFile(path) as z, z.open(member) as src, open(json_path, "wb") as dst:  # type: ignore[arg-type]
                shutil.copyfileobj(src, dst, 1 << 20)
            cleanup = lambda: shutil.rmtree(tmp, ignore_errors=True)  # noqa: E731
        try:
            con = duckdb.connect()
            desc = con.execute(f"DESCRIBE SELECT * FROM {_json_relation_sql(json_path)}").fetchall()
            con.close()
        except duckdb.Error as exc:
            cleanup()
            raise DataError(f"cannot read {path.name} as JSON: {str(exc).splitlines()[0]}") from None
        available = [row[0] for row in desc]
        if available == ["json"]:  # DuckDB's fallback for values that are not objects
            cleanup()
            raise DataError(
                f"{path.name} is JSON but not a list of objects (one per complaint); give the CFPB's JSON export or JSON lines"
            )
        try:
            columns = resolve_columns(path, available, text_column, label_column)
        except DataError:
            cleanup()
            raise
        return Source(
            path,
            fmt,
            columns,
            available,
            stats,
            _json_batches(json_path, columns, {r[0]: str(r[1]) for r in desc}, stats, cleanup),
        )

    names = _csv_header(path, fmt, member)
    columns = resolve_columns(path, names, text_column, label_column)
    return Source(path, fmt, columns, names, stats, _csv_batches(path, fmt, member, names, columns, stats))


def file_sha256(path: str | Path, chunk: int = 8 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


__all__ = [
    "OUTPUT_COLUMNS",
    "ReadStats",
    "Source",
    "Utf8Repair",
    "detect_format",
    "file_sha256",
    "open_source",
    "resolve_columns",
]
