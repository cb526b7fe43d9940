"""Hyperparameter search (Optuna) over the training loop: `tune(TuneConfig(...))`.

Optuna is an optional dependency (`pip install ticket-triage[tune]`); it is imported when a
study runs, not when this package is imported.
"""

from .config import TuneConfig
from .space import SearchSpace, load_space
from .tune import TuneResult, tune

__all__ = ["SearchSpace", "TuneConfig", "TuneResult", "load_space", "tune"]
