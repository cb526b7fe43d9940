"""`fetch_cfpb`: download the CFPB's complaints.csv.zip with resume and integrity checks.

Standard library only (urllib). The download goes to ``OUT.part``; an interrupted run leaves
it there and the next run asks the server for the rest (HTTP Range). The finished file is
checked against Content-Length, an optional sha256, and (for .zip) that the archive opens;
only then is it renamed to OUT.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..errors import DataError

CFPB_URL = "https://files.consumerfinance.gov/ccdb/complaints.csv.zip"
CHUNK = 1 << 20


def _progress(enabled: bool, total: int | None, done: int, name: str):
    if not enabled:
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(f"downloading {name}", total=total, completed=done)
    bar.start()
    return bar, task


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, expected_size: int | None, sha256: str | None, shown: str) -> None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataError(
            f"download of {shown} is incomplete: {size:,} of {expected_size:,} bytes; run `triage data fetch` again to resume"
        )
    if sha256:
        digest = _sha256(path)
        if digest.lower() != sha256.lower():
            path.unlink(missing_ok=True)
            raise DataError(
                f"{shown} has sha256 {digest}, expected {sha256}: the download is corrupt and was removed; run `triage data fetch` again"
            )
    if shown.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as z:
                if not z.namelist():
                    raise zipfile.BadZipFile("the archive lists no files")
        except zipfile.BadZipFile as exc:
            path.unlink(missing_ok=True)
            raise DataError(
                f"{shown} is not a valid zip archive ({exc}): the download is corrupt and was removed; run `triage data fetch` again"
            ) from None


def fetch_cfpb(
    url: str = CFPB_URL,
    out: str | Path = "data/complaints.csv.zip",
    *,
    sha256: str | None = None,
    force: bool = False,
    progress: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `out`, resuming `out.part` if present; returns the verified file."""
    out = Path(out)
    if out.is_dir():
        out = out / (Path(url.split("?")[0]).name or "complaints.csv.zip")
    if out.exists() and not force:
        _verify(out, None, sha256, out.name)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    have = part.stat().st_size if part.exists() else 0

    request = urllib.request.Request(url, headers={"User-Agent": "ticket-triage", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file already holds everything
            m = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
            total = int(m.group(1)) if m else None
            if total is None or total == have:
                _verify(part, total, sha256, out.name)
                part.replace(out)
                return out
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot reach {url}: {reason}; check the URL and the network, then run again") from None

    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206 and have:
            m = re.search(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise DataError(
                    f"the server answered a resume request for {url} with an unexpected range; delete {part} and run again"
                )
            total = int(m.group(2)) if m.group(2) != "*" else (have + length if length is not None else None)
            mode = "ab"
        else:  # 200: the server ignored the Range header (or nothing to resume): start over
            have, total, mode = 0, length, "wb"
        bar = _progress(progress, total, have, out.name)
        done = have
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except http.client.IncompleteRead as exc:
                        f.write(exc.partial)
                        done += len(exc.partial)
                        raise
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if bar:
                        bar[0].update(bar[1], completed=done)
        except (http.client.HTTPException, OSError) as exc:
            raise DataError(
                f"download of {url} was interrupted after {done:,}"
                + (f" of {total:,}" if total else "")
                + f" bytes ({type(exc).__name__}); run `triage data fetch` again to resume from {part.name}"
            ) from None
        finally:
            if bar:
                bar[0].stop()
    _verify(part, total, sha256, out.name)
    part.replace(out)
    return out
