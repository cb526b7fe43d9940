"""Fine-tuning: the training loop (loop.py), its finish (finish.py: test report, calibration),
a whole run (run.py: train_model), its config and checkpoints.

Names are imported on first use, so `import ticket_triage.training.loop` loads the loop alone,
without the evaluation stage that only the finish needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig
    from .finish import TrainResult
    from .run import train_model

_LAZY = {"TrainConfig": "config", "TrainResult": "finish", "train_model": "run"}

__all__ = ["TrainConfig", "TrainResult", "train_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
