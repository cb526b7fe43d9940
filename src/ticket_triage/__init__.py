"""ticket-triage: classify support tickets with a fine-tuned BERT-family model and route them.

Importing the package has no side effects; heavy libraries (torch, transformers) load
only when a function that needs them is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .inference import Classifier, Prediction

__all__ = ["Classifier", "Prediction", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy re-export, so `import ticket_triage` stays cheap for the CLI and the service.
    if name in {"Classifier", "Prediction"}:
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'ticket_triage' has no attribute {name!r}")
