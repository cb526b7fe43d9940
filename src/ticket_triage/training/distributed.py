"""Several processes, one training run: PyTorch DistributedDataParallel under torchrun.

torchrun (or `triage train --nproc N`) starts one process per device and sets RANK,
WORLD_SIZE and LOCAL_RANK. Every process builds the same global batch order from the seed;
process r takes every world_size-th index of each global batch (as DistributedSampler does),
so N processes with per-device batch b step exactly like one process with batch N*b.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the process group torchrun set up: nccl on CUDA, gloo on CPU. A no-op for one process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def mean_across(ctx: DistContext, value: float) -> float:
    """The average of a scalar over all processes (e.g. each rank's mean training loss)."""
    if not ctx.enabled:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    if ctx.backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(ctx: DistContext, indices: np.ndarray, rows: np.ndarray, total: int) -> np.ndarray:
    """Reassemble a full (total, C) array from each rank's shard, on every rank."""
    if not ctx.enabled:
        return rows
    import torch.distributed as dist

    pieces: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(pieces, (indices, rows))
    full = np.zeros((total, rows.shape[1]), dtype=rows.dtype)
    for idx, part in pieces:
        full[idx] = part
    return full


def shard(ctx: DistContext, batch: list[int]) -> list[int]:
    """This process's share of a global batch: every world_size-th member, from its rank."""
    return batch[ctx.rank :: ctx.world_size] if ctx.enabled else batch


def without_nproc(argv: list[str]) -> list[str]:
    """argv minus `--nproc N` / `--nproc=N`: torchrun's own parser would take `--nproc` for `--nproc-per-node`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch_local(nproc: int, argv: list[str]) -> int:
    """`triage train|predict --nproc N ...`: re-run the same command (argv less --nproc) under torchrun
    with N local processes."""
    import subprocess

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "ticket_triage",
        *without_nproc(argv),
    ]
    return subprocess.call(command)
