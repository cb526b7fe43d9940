"""`triage train`, `triage evaluate`, `triage baseline`, `triage demo`."""

from ._app import app  # noqa: F401
