"""`triage tune` commands (registered on the shared app)."""

from ._app import app  # noqa: F401
