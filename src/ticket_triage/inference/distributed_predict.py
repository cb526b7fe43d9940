"""`predict_distributed`: `triage predict` in several processes under torchrun, one share each.

torchrun (or `triage predict --nproc N`) starts the processes and sets RANK, WORLD_SIZE and
LOCAL_RANK. Rank 0 splits the input (`sharding.plan_shares`) and sends the plan to the others
over a gloo process group; each process scores its shares on its own device (GPU LOCAL_RANK,
or its part of the CPU cores) into part files; rank 0 waits for every part, then merges them
into the output in input order and writes the manifest. Several machines need a work folder
they all see (a shared file system), as the parts meet there.

The work folder (default `<out>.parts/`) holds:

    plan.json            the shares: byte or row ranges of the input (or of staged.parquet)
    staged.parquet       a compressed or zipped input, streamed once into Parquet
    part-00003.parquet   share 3's rows and predictions, in input order
    part-00003.json      its receipt, written last: rows, sha256, model version, seconds
    progress-00003.json  rows and bytes (or rows) done so far, polled by rank 0's progress bar

A rerun with the same input keeps each part whose receipt matches the plan, the model version
and the settings and whose file still has the receipt's row count and sha256; it scores only
the rest. Every file is written under a temporary name and renamed, so a killed run leaves no
half-written part, receipt or output. The folder is removed once the output is in place.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, DataError
from .batch import PredictOptions, score_chunk
from .classifier import Classifier, check_threshold
from .files import ChunkWriter, file_format, pick_text_column
from .sharding import Plan, Share, check_input, fingerprint, iter_share, plan_shares, write_json_atomic

PLAN_FILE = "plan.json"
# Ranks wait in collectives while rank 0 stages a large zip and, at the end, for the slowest
# share: hours on CPUs. torchrun ends every process when one fails, so a long timeout does
# not turn a crash into a hang.
GROUP_TIMEOUT = timedelta(hours=48)
PROGRESS_EVERY_S = 0.5


@dataclass
class PartReceipt:
    """What a finished part holds; it is written after the part, so it vouches for a whole file."""

    share: dict
    rows: int
    errors: int
    needs_review: int
    sha256: str
    model_version: str
    settings: dict
    text_column: str | None
    seconds: float
    rank: int
    host: str
    kept: bool = False  # set at merge time: scored by an earlier run and verified

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.seconds, 1) if self.seconds > 0 else 0.0


@dataclass
class DistributedPredictReport:
    input: str
    output: str
    manifest: str
    rows: int
    predicted: int
    errors: int
    needs_review: int | None
    seconds: float
    rows_per_s: float
    text_column: str | None
    backend: str
    model_version: str
    world_size: int
    process_group: str | None = None  # "gloo" with several processes
    parts: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def work_dir_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def manifest_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".manifest.json")


def part_path(work: Path, index: int, suffix: str = "parquet") -> Path:
    return work / f"part-{index:05d}.{suffix}"


def progress_path(work: Path, index: int) -> Path:
    return work / f"progress-{index:05d}.json"


# -- the process group ---------------------------------------------------------------------
def join_group():
    """This process's DistContext; a gloo group when torchrun started several. Gloo even with
    GPUs: only the plan and the receipts travel between processes, never tensors."""
    from ..training.distributed import DistContext, launched_by_torchrun

    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext(local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=GROUP_TIMEOUT)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        backend="gloo",
    )


def _all_gather(ctx, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _share_from_rank0(ctx, make: Callable[[], Any]) -> Any:
    """`make()` on rank 0, sent to every rank; an error there is raised on every rank, so no
    process is left waiting for a plan that will not come."""
    from .. import errors
    from ..training.distributed import broadcast_object

    value, error = None, None
    if ctx.is_main:
        try:
            value = make()
        except errors.TicketTriageError as exc:
            error = (type(exc).__name__, str(exc))
    value, error = broadcast_object(ctx, (value, error))
    if error is not None:
        raise getattr(errors, error[0], errors.TicketTriageError)(error[1])
    return value


# -- devices -------------------------------------------------------------------------------
def rank_device(device: str, local_rank: int) -> str:
    """One GPU per local rank when CUDA is there and wanted; otherwise `device` as given."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def rank_threads(threads: int | None) -> int:
    """CPU threads per process: the cores this process may use, divided among the local processes."""
    if threads:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    return max(1, cores // max(1, local))


# -- the job -------------------------------------------------------------------------------
def predict_distributed(
    model_dir: str | Path | Classifier,
    input: str | Path,
    output: str | Path,
    options: PredictOptions | None = None,
    *,
    work_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
    **fields,
) -> DistributedPredictReport | None:
    """Score `input` into `output` as `predict_file` does (same options), this process taking its
    shares. Returns the report on rank 0 and None elsewhere. Also runs in a single process (one share)."""
    opts = PredictOptions.of(options, **fields)
    abstain_below = opts.abstain_below
    input, output = Path(input), Path(output)
    check_input(input)
    file_format(output, role="output")
    if input.resolve() == output.resolve():
        raise DataError("--out must differ from --input")
    check_threshold(abstain_below)
    work = Path(work_dir) if work_dir else work_dir_for(output)
    ctx = join_group()
    started = time.perf_counter()
    clf = opts.load(model_dir, threads=rank_threads(opts.threads), device=rank_device(opts.device, ctx.local_rank))
    settings = {"input": str(input.resolve()), "text_column": opts.text_column, "abstain_below": abstain_below}
    plan = Plan.from_dict(_share_from_rank0(ctx, lambda: _load_or_plan(input, work, ctx.world_size, log).to_dict()))
    mine = [s for s in plan.shares if s.index % ctx.world_size == ctx.rank]
    bar = _ProgressPoller(work, plan) if ctx.is_main and progress else None
    try:
        receipts = [
            _keep_or_score(clf, plan, share, work, settings, ctx, opts.batch_size, opts.chunk_rows, log)
            for share in mine
        ]
        gathered = [r for rank_receipts in _all_gather(ctx, [asdict(r) for r in receipts]) for r in rank_receipts]
    finally:
        if bar:
            bar.close()
        from ..training.distributed import shutdown

        shutdown(ctx)  # a gloo group left to the interpreter's exit can abort the process (SIGABRT)
    if not ctx.is_main:
        return None
    parts = sorted((PartReceipt(**r) for r in gathered), key=lambda r: r.share["index"])
    return _merge(parts, plan, work, input, output, clf, ctx, abstain_below, time.perf_counter() - started, log)


def _load_or_plan(input: Path, work: Path, n: int, log) -> Plan:
    """The saved plan when it was made for this very input, else a new one (old parts removed)."""
    import json

    saved = work / PLAN_FILE
    if saved.is_file():
        try:
            plan = Plan.from_dict(json.loads(saved.read_text()))
            if (
                plan.input == str(input.resolve())
                and plan.fingerprint == fingerprint(input)
                and Path(plan.source).is_file()
            ):
                log(f"resuming from {work}: {len(plan.shares)} shares planned earlier")
                return plan
        except (ValueError, TypeError, KeyError):
            pass
        log(f"{work} was planned for another input or version of it: starting over")
    _clear(work)
    work.mkdir(parents=True, exist_ok=True)
    plan = plan_shares(input.resolve(), n, stage_dir=work)
    if plan.staged_because:
        log(f"staged {input.name} to {plan.source} ({plan.staged_because})")
    write_json_atomic(saved, plan.to_dict())
    return plan


def _clear(work: Path) -> None:
    """Remove what this module writes in `work` (and nothing else), then the folder if empty."""
    if not work.is_dir():
        return
    for pattern in ("part-*", "progress-*", PLAN_FILE, "staged.parquet*", ".*.tmp"):
        for path in work.glob(pattern):
            path.unlink(missing_ok=True)
    try:
        work.rmdir()
    except OSError:
        pass  # the user's own files are in it


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_receipt(work: Path, share: Share, model_version: str, settings: dict, unit: str) -> PartReceipt | None:
    """The receipt of a finished part that can be kept, or None (then the share is scored again)."""
    import json

    path = part_path(work, share.index, "json")
    data = part_path(work, share.index)
    if not path.is_file() or not data.is_file():
        return None
    try:
        receipt = PartReceipt(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    if receipt.share != asdict(share) or receipt.model_version != model_version or receipt.settings != settings:
        return None
    if (unit == "rows" and receipt.rows != share.size) or _parquet_rows(data) != receipt.rows:
        return None
    return receipt if file_sha256(data) == receipt.sha256 else None


def _parquet_rows(path: Path) -> int:
    if path.stat().st_size == 0:
        return 0  # a share without rows leaves an empty file
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(path)).metadata.num_rows
    except Exception:  # a damaged file: pyarrow's own error types
        return -1


def _keep_or_score(
    clf, plan: Plan, share: Share, work: Path, settings: dict, ctx, batch_size: int, chunk_rows: int, log
) -> PartReceipt:
    kept = verified_receipt(work, share, clf.model_version, settings, plan.unit)
    if kept is not None:
        log(f"share {share.index}: kept its finished part ({kept.rows} rows)")
        write_json_atomic(progress_path(work, share.index), {"units": share.size, "rows": kept.rows})
        kept.kept = True
        return kept
    return _score_share(clf, plan, share, work, settings, ctx, batch_size, chunk_rows)


def _score_share(
    clf, plan: Plan, share: Share, work: Path, settings: dict, ctx, batch_size: int, chunk_rows: int
) -> PartReceipt:

    started = time.perf_counter()
    data = part_path(work, share.index)
    part_path(work, share.index, "json").unlink(missing_ok=True)
    write_json_atomic(progress_path(work, share.index), {"units": 0, "rows": 0})
    writer = ChunkWriter(data)
    rows = errors = review = 0
    column, ok = None, False
    try:
        for chunk, units in iter_share(plan, share, chunk_rows):
            if column is None:
                column = pick_text_column(list(chunk.columns), settings["text_column"], plan.input)
            out, bad, flagged = score_chunk(clf, chunk, column, batch_size, settings["abstain_below"])
            writer.write(out)
            rows, errors, review = rows + len(out), errors + bad, review + flagged
            write_json_atomic(progress_path(work, share.index), {"units": units, "rows": rows})
        ok = True
    finally:
        writer.close(ok)
    receipt = PartReceipt(
        share=asdict(share),
        rows=rows,
        errors=errors,
        needs_review=review,
        sha256=file_sha256(data),
        model_version=clf.model_version,
        settings=settings,
        text_column=column,
        seconds=round(time.perf_counter() - started, 3),
        rank=ctx.rank,
        host=socket.gethostname(),
    )
    write_json_atomic(progress_path(work, share.index), {"units": share.size, "rows": rows})
    write_json_atomic(part_path(work, share.index, "json"), asdict(receipt))
    return receipt


def _merge(
    parts: list[PartReceipt],
    plan: Plan,
    work: Path,
    input: Path,
    output: Path,
    clf,
    ctx,
    abstain_below,
    seconds: float,
    log,
) -> DistributedPredictReport:
    """The parts, in share order, into `output` (written to a temporary name, then renamed)."""
    import pyarrow.parquet as pq

    versions = {p.model_version for p in parts}
    if len(versions) > 1:
        raise ConfigError(
            f"the parts were scored by different backends or weights ({', '.join(sorted(versions))}): pass --backend and --device explicitly and rerun"
        )
    rows = sum(p.rows for p in parts)
    if rows == 0:
        _clear(work)
        raise DataError(f"{input} holds no rows")
    writer = ChunkWriter(output)
    ok = False
    try:
        for part in parts:
            if part.rows:
                for batch in pq.ParquetFile(str(part_path(work, part.share["index"]))).iter_batches():
                    writer.write(batch.to_pandas())
        ok = True
    finally:
        writer.close(ok)
    column = next((p.text_column for p in parts if p.text_column), None)
    errors = sum(p.errors for p in parts)
    report = DistributedPredictReport(
        input=str(input),
        output=str(output),
        manifest=str(manifest_path(output)),
        rows=rows,
        predicted=rows - errors,
        errors=errors,
        needs_review=sum(p.needs_review for p in parts) if abstain_below is not None else None,
        seconds=round(seconds, 3),
        rows_per_s=round(rows / seconds, 1) if seconds > 0 else 0.0,
        text_column=column,
        backend=f"{clf.backend}-{clf.precision}",
        model_version=versions.pop(),
        world_size=ctx.world_size,
        process_group=ctx.backend,
        parts=[
            {
                "share": p.share["index"],
                "rank": p.rank,
                "host": p.host,
                "rows": p.rows,
                "errors": p.errors,
                "seconds": p.seconds,
                "rows_per_s": p.rows_per_s,
                "sha256": p.sha256,
                "kept": p.kept,
            }
            for p in parts
        ],
    )
    write_json_atomic(
        manifest_path(output),
        {
            **report.to_dict(),
            "plan": {
                "format": plan.format,
                "unit": plan.unit,
                "shares": len(plan.shares),
                "staged_because": plan.staged_because,
            },
        },
    )
    _clear(work)
    log(f"merged {len(parts)} parts into {output}")
    return report


# -- one progress bar for the whole job ----------------------------------------------------
class _ProgressPoller:
    """Rank 0's bar: a thread sums the progress files every process writes after each chunk."""

    def __init__(self, work: Path, plan: Plan):
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.work, self.plan = work, plan
        self.progress = Progress(
            TextColumn("predicting"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = self.progress.add_task("predict", total=max(plan.total, 1), rows=0)
        self.stop = threading.Event()
        self.progress.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def totals(self) -> tuple[int, int]:
        import json

        units = rows = 0
        for share in self.plan.shares:
            try:
                done = json.loads(progress_path(self.work, share.index).read_text())
            except (OSError, ValueError):
                continue
            units, rows = units + int(done["units"]), rows + int(done["rows"])
        return units, rows

    def _run(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY_S):
            units, rows = self.totals()
            self.progress.update(self.task, completed=units, rows=rows)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.progress.stop()
