"""`--promote-if-better`: register and promote a challenger only when the gate's verdict passes.

The registry is `ticket_triage.registry.ModelRegistry` (a folder of versions); any object with
its register / promote / active methods will do (the tests pass one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_registry(root: str | Path):
    from ..registry import ModelRegistry

    return ModelRegistry(root)


def promote_if_better(
    report: dict[str, Any], *, champion: str | Path, challenger: str | Path, registry, note: str = ""
) -> Any | None:
    """The promoted challenger's version, or None when the verdict failed (nothing is registered then).

    An empty registry first gets the champion, active, so that a rollback has somewhere to go."""
    if not report["verdict"]["passed"]:
        return None
    if registry.active() is None:
        first = registry.register(champion, note="the champion, registered before its first retrain")
        registry.promote(first.version, by="retrain")
    version = registry.register(challenger, comparison=report, note=note)
    return registry.promote(version.version, by="retrain")
