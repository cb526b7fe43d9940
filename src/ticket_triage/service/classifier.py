"""The classifier contract the service relies on, and loading the real one.

The service needs only `.labels`, `.model_version` and
`.predict(texts, batch_size) -> [Prediction(category, confidence, probabilities)]`:
`ticket_triage.Classifier` provides it (the fastest backend on this machine with backend="auto"),
and tests inject a small deterministic fake through `create_app(settings, classifier=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence


class PredictionLike(Protocol):
    category: str
    confidence: float
    probabilities: dict[str, float]


class ClassifierLike(Protocol):
    labels: list[str]
    model_version: str

    def predict(self, texts: list[str], batch_size: int = 32) -> Sequence[PredictionLike]: ...


def load_classifier(
    model_dir: str | Path, backend: str = "auto", device: str = "auto", ensemble: bool | None = None
) -> ClassifierLike:
    """`ticket_triage.Classifier.load(model_dir, backend, device=device, ensemble=ensemble)`: with
    backend "auto" the fastest path on this machine (`inference.backends.choose_auto`); the TF-IDF
    hybrid as the folder says unless `ensemble` forces it on or off."""
    from ..inference import Classifier

    return Classifier.load(model_dir, backend=backend, device=device, ensemble=ensemble)
