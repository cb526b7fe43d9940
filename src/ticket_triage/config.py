"""Every typed configuration in one place. Each lives beside the stage that uses it and is
saved next to what it produced (manifest.json, train_config.yaml, tune_config.yaml)."""

from __future__ import annotations

from typing import Any

__all__ = ["DataConfig", "TrainConfig", "TuneConfig", "ServiceSettings"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing one config does not import every stage's dependencies.
    if name == "DataConfig":
        from .data.config import DataConfig

        return DataConfig
    if name == "TrainConfig":
        from .training.config import TrainConfig

        return TrainConfig
    if name == "TuneConfig":
        from .tuning.config import TuneConfig

        return TuneConfig
    if name == "ServiceSettings":
        from .service.settings import Settings

        return Settings
    raise AttributeError(f"module 'ticket_triage.config' has no attribute {name!r}")
