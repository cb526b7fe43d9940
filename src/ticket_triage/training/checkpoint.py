"""Resumable checkpoints, written atomically: a kill at any moment leaves the last good one.

A checkpoint folder holds the model weights (safetensors) and `training_state.pt`: optimizer,
scheduler, RNG states and the loop's position. The state file has tensors and plain Python
values only and is read back with `torch.load(weights_only=True)`: nothing arbitrary is unpickled.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_DIR = "checkpoint"


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


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, loop_state: dict[str, Any], scaler=None) -> Path:
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
            "loop": loop_state,
        },
        tmp / "training_state.pt",
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
    """The saved training state of `out_dir/checkpoint` (optimizer, scheduler, RNG, loop), or None."""
    import torch

    path = Path(out_dir) / CHECKPOINT_DIR / "training_state.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None


def restore_checkpoint(out_dir: Path, state: dict[str, Any], model, optimizer, scheduler, scaler=None) -> dict[str, Any]:
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
