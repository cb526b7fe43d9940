"""Resumable checkpoints, written atomically: a kill at any moment leaves the last good one.

A checkpoint folder holds the model weights (safetensors) and `training_state.pt`: optimizer,
scheduler, RNG states, the loop's position (`LoopState`) and the run's TrainConfig. The state file has tensors and plain Python
values only and is read back with `torch.load(weights_only=True)`: nothing arbitrary is unpickled.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "training_state.pt"
# 2: the loop state as LoopState's fields and the run's TrainConfig. 1 (no version key) held neither.
CHECKPOINT_FORMAT = 2


@dataclass
class LoopState:
    """Where the loop is: everything besides weights, optimizer and RNGs needed to continue after a kill."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch done
    step: int = 0  # optimizer steps taken
    loss_sum: float = 0.0  # training loss summed over this epoch's batches so far
    loss_batches: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one validation record per epoch
    best_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    train_seconds: float = 0.0
    train_samples: int = 0
    global_batch: int = 0  # rows per optimizer micro-step over all processes; kept on resume

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | Path = "the checkpoint") -> "LoopState":
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ConfigError(
                f"{where} holds a loop state with keys {sorted(data)}, not {sorted(names)}: start the run again without --resume"
            )
        return cls(**data)


def replace_dir_atomically(tmp: Path, final: Path) -> None:
    """Move a fully written `tmp` folder to `final`; the old one disappears only after."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def rng_state() -> dict[str, Any]:
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path, model, optimizer, scheduler, loop_state: LoopState, config: dict[str, Any], scaler=None
) -> Path:
    """Write `out_dir/checkpoint` atomically; `config` is the run's TrainConfig.to_dict(), what --resume continues."""
    import torch
    from safetensors.torch import save_file

    final = Path(out_dir) / CHECKPOINT_DIR
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(weights), str(tmp / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(),
            "loop": loop_state.to_dict(),
            "config": config,
            "format": CHECKPOINT_FORMAT,
        },
        tmp / STATE_FILE,
    )
    replace_dir_atomically(tmp, final)
    return final


def _untie(weights: dict) -> dict:
    # safetensors refuses tensors that share memory (tied embeddings): give each its own copy.
    seen: dict[int, str] = {}
    out = {}
    for name, tensor in weights.items():
        ptr = tensor.data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor
        seen.setdefault(ptr, name)
    return out


def read_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    """The saved training state of `out_dir/checkpoint` (optimizer, scheduler, RNG, loop, config), or None."""
    import torch

    path = Path(out_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path.parent} was written by another version of ticket-triage (checkpoint format {state.get('format', 1)}, "
            f"this one reads {CHECKPOINT_FORMAT}) and cannot be resumed: delete it and train again without --resume"
        )
    state["loop"] = LoopState.from_dict(state["loop"], path.parent)
    return state


def restore_checkpoint(out_dir: Path, state: dict[str, Any], model, optimizer, scheduler, scaler=None) -> LoopState:
    """Put a state from `read_checkpoint` back into the model, optimizer, scheduler, scaler and RNGs;
    returns the loop state."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(out_dir) / CHECKPOINT_DIR / "model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["loop"]


# Settings that change where or how fast a resumed run goes, or what is reported after it, not what it learns.
RESUME_SAFE = frozenset({"device", "threads", "eval_batch_size", "checkpoint_every", "mlflow", "baseline", "calibrate"})


def check_resume_config(saved: dict[str, Any], config, out_dir: Path) -> None:
    """Refuse to continue a checkpoint under a TrainConfig that would change what it trains."""
    ours = config.to_dict()
    changed = sorted(k for k in set(saved) | set(ours) if k not in RESUME_SAFE and ours.get(k) != saved.get(k))
    if changed:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {ours.get(k)!r}" for k in changed)
        raise ConfigError(
            f"{out_dir} was trained with other settings ({shown}); --resume continues a run as it was: leave those options out "
            f"(only {', '.join(sorted(RESUME_SAFE))} may change on resume), or train into another --out"
        )


def resume_config(out_dir: str | Path, overrides: dict[str, Any], fresh):
    """The TrainConfig to resume `out_dir` with: its checkpoint's, with `overrides` (the options given,
    None for those left out) applied where they are safe; any other option that differs is refused.
    Without a checkpoint, `fresh()` (the config from the options, as for a new run)."""
    from .config import TrainConfig

    saved = read_checkpoint(Path(out_dir))
    if saved is None:
        return fresh()
    base = dict(saved["config"])
    config = TrainConfig.from_dict({**base, **{k: v for k, v in overrides.items() if v is not None}})
    check_resume_config(base, config, Path(out_dir))
    return config
