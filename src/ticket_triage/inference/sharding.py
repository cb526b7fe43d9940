"""One input file cut into contiguous shares, one per process, every row in exactly one share.

* CSV and JSON lines (uncompressed): byte ranges, each starting at a row start.
* Parquet: row ranges; a process reads only the row groups its range overlaps.
* Compressed files (.gz, .bz2, .zst) and the CFPB's .zip cannot be entered half-way, so they
  are streamed once into a Parquet file in the work folder (`stage_to_parquet`) and split as
  Parquet.

Where a CSV row starts: a newline ends a row unless it is inside a quoted field, and in
well-formed CSV (RFC 4180: a field is quoted as a whole, an inner quote doubled) a position is
inside quotes exactly when an odd number of quote characters comes before it. So one
sequential pass that counts quotes (numpy over 64 MB blocks, at memory speed) finds every split
point, and each reader cuts its share into blocks by the same rule. The pass also checks that
every quote opens a field (after a comma, a line end or another quote) or closes one (before
the same), which is what makes the counting equal to a CSV parser's reading; a file with a
stray quote inside an unquoted field fails that check and is staged to Parquet with the
ordinary streaming reader instead, so it is still read exactly as `triage predict` reads it.
Staging every CSV would be simpler but writes a second copy of a file of several GB before
any process can start; the counting pass only reads it.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from ..errors import DataError
from .files import COMPRESSIONS, file_format, iter_chunks

SCAN_BLOCK = 64 << 20  # bytes per step of the split-point pass
READ_BLOCK = 8 << 20  # bytes a share reader parses at a time (grown for a longer row)
QUOTE, NEWLINE = ord('"'), ord("\n")
BESIDE_QUOTE = np.array([ord(","), NEWLINE, ord("\r"), QUOTE], dtype=np.uint8)  # what may border a quote in clean CSV
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Share:
    """[start, end) of the split file: bytes for CSV / JSON lines, rows for Parquet."""

    index: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class Plan:
    """How a file is split: written once by rank 0 and read by every rank (and by a resumed run)."""

    input: str
    fingerprint: dict  # the input's size and mtime: a changed input invalidates kept parts
    source: str  # the file the shares index into: the input itself, or its staged Parquet copy
    format: str  # csv | jsonl | parquet (of `source`)
    unit: str  # bytes | rows
    shares: list[Share]
    header_end: int = 0  # CSV: the header row is bytes [0, header_end)
    staged_because: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(s.size for s in self.shares)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        return cls(**{**data, "shares": [Share(**s) for s in data["shares"]]})


def fingerprint(path: str | Path) -> dict:
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def needs_staging(path: str | Path) -> bool:
    """True for inputs that cannot be split in place: compressed text and zip archives."""
    suffix = Path(path).suffix.lower()
    return suffix == ".zip" or (suffix in COMPRESSIONS and file_format(path) != "parquet")


def check_input(path: str | Path) -> None:
    """A DataError now, before any process starts, for a file `plan_shares` cannot read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    if path.suffix.lower() != ".zip":
        file_format(path)


# -- planning ------------------------------------------------------------------------------
def plan_shares(path: str | Path, n: int, stage_dir: str | Path | None = None) -> Plan:
    """Split `path` into `n` contiguous shares (some may be empty when rows are few)."""
    path = Path(path)
    check_input(path)
    if n < 1:
        raise DataError(f"cannot split {path} into {n} shares: give at least 1 process")
    stamp = fingerprint(path)
    if needs_staging(path):
        return _plan_staged(path, n, stage_dir, stamp, f"{path.suffix} input cannot be split in place")
    fmt = file_format(path)
    if fmt == "parquet":
        return _plan_parquet(path, path, n, stamp)
    targets = [path.stat().st_size * k // n for k in range(1, n)]
    scan = _scan_csv(path, targets) if fmt == "csv" else _scan_lines(path, targets)
    if scan.stray_quote is not None:
        why = (
            f"a quote at byte {scan.stray_quote} is inside an unquoted field, so quote counting cannot find row starts"
        )
        return _plan_staged(path, n, stage_dir, stamp, why)
    bounds = [scan.header_end, *scan.boundaries, path.stat().st_size]
    shares = [Share(i, bounds[i], bounds[i + 1]) for i in range(n)]
    return Plan(str(path), stamp, str(path), fmt, "bytes", shares, header_end=scan.header_end)


def _plan_parquet(source: Path, input: Path, n: int, stamp: dict, why: str = "") -> Plan:
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(str(source)).metadata.num_rows
    bounds = [rows * k // n for k in range(n + 1)]
    shares = [Share(i, bounds[i], bounds[i + 1]) for i in range(n)]
    return Plan(str(input), stamp, str(source), "parquet", "rows", shares, staged_because=why)


def _plan_staged(path: Path, n: int, stage_dir, stamp: dict, why: str) -> Plan:
    if stage_dir is None:
        raise DataError(
            f"{path} must be staged to Parquet before it can be split ({why}), and no work folder was given"
        )
    staged = Path(stage_dir) / "staged.parquet"
    stage_to_parquet(path, staged)
    return _plan_parquet(staged, path, n, stamp, why)


@dataclass
class _Scan:
    header_end: int
    boundaries: list[int]
    stray_quote: int | None = None


def _scan_csv(path: Path, targets: list[int]) -> _Scan:
    """Row starts at or after each target (sorted), in one pass that counts quotes."""
    size = path.stat().st_size
    found: list[int] = []
    header_end = None
    quotes = 0  # quote characters before the current block
    with open(path, "rb") as fh:
        first = fh.read(len(BOM))
        begin = len(BOM) if first == BOM else 0
        fh.seek(0)
        offset, before = 0, None  # `before`: the byte preceding the block
        while offset < size:
            # One byte of look-ahead, so a quote at a block's end sees what follows it.
            data = fh.read(SCAN_BLOCK + 1)
            fh.seek(offset + min(len(data), SCAN_BLOCK))
            buf = np.frombuffer(data, dtype=np.uint8)
            body = len(buf) if offset + len(buf) >= size else len(buf) - 1
            stray = _stray_quote(buf, body, quotes, before, offset, begin)
            if stray is not None:
                return _Scan(0, [], stray_quote=stray)
            q = np.flatnonzero(buf[:body] == QUOTE)
            nl = np.flatnonzero(buf[:body] == NEWLINE)
            starts = nl[(quotes + np.searchsorted(q, nl)) % 2 == 0] + offset + 1
            if header_end is None and len(starts):
                header_end = int(starts[0])
            while len(found) < len(targets) and len(starts) and starts[-1] >= targets[len(found)]:
                found.append(int(starts[np.searchsorted(starts, targets[len(found)])]))
            quotes += len(q)
            before = int(buf[body - 1]) if body else before
            offset += body
    header_end = size if header_end is None else header_end
    found += [size] * (len(targets) - len(found))
    return _Scan(header_end, [max(b, header_end) for b in found])


def _stray_quote(buf: np.ndarray, body: int, quotes: int, before: int | None, offset: int, begin: int) -> int | None:
    """Byte offset of the first quote that neither opens nor closes a field, or None."""
    q = np.flatnonzero(buf[:body] == QUOTE)
    if not len(q):
        return None
    opens = (quotes + np.arange(len(q))) % 2 == 0
    prev = np.where(q > 0, buf[np.maximum(q - 1, 0)], NEWLINE if before is None else before)
    at_start = (q + offset) == begin
    nxt = np.where(q + 1 < len(buf), buf[np.minimum(q + 1, len(buf) - 1)], NEWLINE)  # end of file: closes
    bad = (opens & ~np.isin(prev, BESIDE_QUOTE) & ~at_start) | (~opens & ~np.isin(nxt, BESIDE_QUOTE))
    hits = np.flatnonzero(bad)
    return int(q[hits[0]] + offset) if len(hits) else None


def _scan_lines(path: Path, targets: list[int]) -> _Scan:
    """JSON lines: a raw newline cannot occur inside a JSON string, so every newline ends a row."""
    found = []
    with open(path, "rb") as fh:
        for target in targets:
            if target == 0:
                found.append(0)
                continue
            fh.seek(target - 1)
            while True:  # the first row start at or after target: just after a newline at target-1 or later
                block = fh.read(1 << 20)
                if not block:
                    found.append(path.stat().st_size)
                    break
                hit = block.find(b"\n")
                if hit >= 0:
                    found.append(fh.tell() - len(block) + hit + 1)
                    break
    return _Scan(0, found)


# -- reading a share -----------------------------------------------------------------------
def iter_share(plan: Plan, share: Share, chunk_rows: int = 8192) -> Iterator[tuple["pd.DataFrame", int]]:  # noqa: F821
    """(rows, units read so far) for `share`, in file order, at most `chunk_rows` rows at a time."""
    if share.size <= 0:
        return
    source = Path(plan.source)
    if plan.format == "parquet":
        yield from _iter_parquet_rows(source, share.start, share.end, chunk_rows)
        return
    with open(source, "rb") as fh:
        if plan.format == "csv":
            header = fh.read(plan.header_end)
            fh.seek(share.start)
            yield from _csv_frames(fh, header, share.size, chunk_rows, source)
        else:
            fh.seek(share.start)
            yield from _jsonl_frames(fh, share.size, chunk_rows, source)


def _iter_parquet_rows(path: Path, start: int, end: int, chunk_rows: int):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    offsets = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    groups = [g for g in range(pf.num_row_groups) if offsets[g] < end and offsets[g + 1] > start]
    if not groups:
        return
    row = int(offsets[groups[0]])
    for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=groups):
        lo, hi = max(start - row, 0), min(end - row, batch.num_rows)
        row += batch.num_rows
        if hi > lo:
            yield batch.slice(lo, hi - lo).to_pandas(), min(row, end) - start
        if row >= end:
            return


def _pieces(fh: BinaryIO, limit: int | None, last_row_end: Callable[[bytes], int]) -> Iterator[tuple[bytes, int]]:
    """(whole rows, bytes read so far) from `limit` bytes of `fh` (None: to its end)."""
    carry, done = b"", 0
    block = READ_BLOCK
    while limit is None or done < limit:
        data = fh.read(block if limit is None else min(block, limit - done))
        if not data:
            break
        done += len(data)
        buf = carry + data
        cut = last_row_end(buf)
        if cut == 0:
            carry, block = buf, block * 2  # a row longer than the block: read on, in bigger steps
            continue
        carry, block = buf[cut:], READ_BLOCK
        yield buf[:cut], done - len(carry)
    if carry:
        yield carry, done


def last_csv_row_end(buf: bytes) -> int:
    """Index just past the last newline outside quotes in `buf` (which starts at a row start), or 0."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == NEWLINE)
    if not len(nl):
        return 0
    q = np.flatnonzero(arr == QUOTE)
    outside = nl[np.searchsorted(q, nl) % 2 == 0]
    return int(outside[-1]) + 1 if len(outside) else 0


def _last_line_end(buf: bytes) -> int:
    return buf.rfind(b"\n") + 1


def _csv_frames(fh: BinaryIO, header: bytes | None, limit: int | None, chunk_rows: int, where: Path):
    """Frames (all columns as strings, as `files.iter_chunks` reads CSV) from whole-row pieces;
    `header` None: the stream starts with its header row."""
    for piece, done in _pieces(fh, limit, last_csv_row_end):
        if header is None:
            cut = _first_csv_row_end(piece)
            header, piece = piece[:cut], piece[cut:]
        if piece.strip():
            yield from _slices(_parse_csv(header, piece, where), chunk_rows, done)


def _first_csv_row_end(buf: bytes) -> int:
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == NEWLINE)
    q = np.flatnonzero(arr == QUOTE)
    outside = nl[np.searchsorted(q, nl) % 2 == 0]
    return int(outside[0]) + 1 if len(outside) else len(buf)


def _parse_csv(header: bytes, piece: bytes, where: Path):
    import pyarrow as pa
    from pyarrow import csv

    if not header.endswith(b"\n"):
        header += b"\n"
    data = header + piece
    parse = csv.ParseOptions(newlines_in_values=True)
    read = csv.ReadOptions(block_size=len(data) + 1, use_threads=False)  # one block: the piece holds whole rows
    try:
        names = csv.read_csv(io.BytesIO(header), read_options=read, parse_options=parse).schema.names
        convert = csv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=False)
        return csv.read_csv(
            io.BytesIO(data), read_options=read, parse_options=parse, convert_options=convert
        ).to_pandas()
    except pa.ArrowInvalid as exc:
        raise DataError(f"cannot read {where} as csv: {str(exc).splitlines()[0]}") from None


def _jsonl_frames(fh: BinaryIO, limit: int | None, chunk_rows: int, where: Path):
    import pandas as pd

    for piece, done in _pieces(fh, limit, _last_line_end):
        if not piece.strip():
            continue
        try:
            # As `files.iter_chunks` reads JSON lines, so one process and many see the same values.
            frame = pd.read_json(io.StringIO(piece.decode("utf-8")), lines=True, dtype=False)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {where} as jsonl: {str(exc).splitlines()[0]}") from None
        yield from _slices(frame, chunk_rows, done)


def _slices(frame, chunk_rows: int, done: int):
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start : start + chunk_rows].reset_index(drop=True), done


# -- staging -------------------------------------------------------------------------------
def stage_to_parquet(path: str | Path, dest: str | Path, chunk_rows: int = 65536) -> Path:
    """Stream `path` (compressed CSV / JSON lines, or a zip holding one) once into Parquet at
    `dest`, written to a temporary name and renamed, so a half-staged file is never used."""
    from .files import ChunkWriter

    path, dest = Path(path), Path(dest)
    writer = ChunkWriter(dest)
    ok = False
    try:
        for frame in _staging_frames(path, chunk_rows):
            writer.write(frame)
        ok = True
    finally:
        writer.close(ok)
    if dest.stat().st_size == 0:
        dest.unlink()
        raise DataError(f"{path} holds no rows")
    return dest


def _staging_frames(path: Path, chunk_rows: int):
    if path.suffix.lower() != ".zip":
        yield from iter_chunks(path, chunk_rows)  # the reader one process uses: the same values
        return
    import zipfile

    from ..data.reading import detect_format

    fmt, member = detect_format(path)
    name = (member or "").lower()
    if fmt != "csv.zip" and not name.endswith((".jsonl", ".ndjson")):
        raise DataError(
            f"{path} holds {member}, which `triage predict` cannot read: give a zip of one CSV or JSON lines file"
        )
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
            if fmt == "csv.zip":
                yield from (frame for frame, _ in _csv_frames(fh, None, None, chunk_rows, path))
            else:
                yield from (frame for frame, _ in _jsonl_frames(fh, None, chunk_rows, path))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; download it again") from None


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON to a temporary name, then rename: a reader sees the old file or the new, whole."""
    import json

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
