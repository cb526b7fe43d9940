"""The ticket routing service: FastAPI app factory, settings, data layer, routing rules.

    from ticket_triage.service import Settings, create_app
    app = create_app(Settings(model_dir="runs/demo/model"))

Importing this package creates nothing (no engine, no settings, no model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app
    from .settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(name)
