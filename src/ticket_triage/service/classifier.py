"""Loading the classifier the service uses.

The service needs only the `Classifier` contract: `.labels`, `.model_version` and
`.predict(texts, batch_size) -> [Prediction(category, confidence, probabilities)]`.
`ticket_triage.inference.Classifier` provides it (fastest backend in the folder). Where that
module is not installed yet, `FolderClassifier` below reads the same model folder with torch,
through the shared tokenization, so the service can run against any model folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from ..errors import ModelError


class PredictionLike(Protocol):
    category: str
    confidence: float
    probabilities: dict[str, float]


class ClassifierLike(Protocol):
    labels: list[str]
    model_version: str

    def predict(self, texts: list[str], batch_size: int = 32) -> Sequence[PredictionLike]: ...


@dataclass
class SimplePrediction:
    category: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "confidence": self.confidence, "probabilities": dict(self.probabilities)}


def folder_version(folder: Path) -> str:
    """A short, stable id of a model folder's contents (name + hash of its metadata and weight sizes)."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            h.update(path.name.encode())
            h.update(str(path.stat().st_size).encode())
            if path.suffix == ".json":
                h.update(path.read_bytes())
    return f"{folder.resolve().name}@{h.hexdigest()[:10]}"


class FolderClassifier:
    """Torch inference over a model folder (fallback while `ticket_triage.inference` is absent)."""

    def __init__(self, folder: str | Path):
        import torch

        from ..modeling import load_model_folder

        self.folder = Path(folder)
        self.model, self.tokenizer, self.meta = load_model_folder(self.folder)
        self.labels = list(self.meta.labels)
        self.model_version = folder_version(self.folder)
        self._torch = torch

    def predict(self, texts: list[str], batch_size: int = 32) -> list[SimplePrediction]:
        from ..tokenization import encode_texts, pad_batch

        torch = self._torch
        out: list[SimplePrediction] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            ids = encode_texts(self.tokenizer, chunk, self.meta.max_length, self.meta.truncation)
            input_ids, mask = pad_batch(ids, self.tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask)[0] / self.meta.temperature
            probs = torch.softmax(logits.float(), dim=-1).tolist()
            for row in probs:
                best = max(range(len(row)), key=row.__getitem__)
                out.append(SimplePrediction(self.labels[best], float(row[best]), {l: float(p) for l, p in zip(self.labels, row)}))
        return out


def load_classifier(model_dir: str | Path, backend: str = "auto") -> ClassifierLike:
    """`ticket_triage.Classifier.load(model_dir, backend)`, or the torch fallback if that is not there yet."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist; give --model with the `model/` folder `triage train` wrote")
    try:
        from ..inference import Classifier  # type: ignore[attr-defined]
    except ImportError:
        Classifier = None  # noqa: N806
    if Classifier is not None:
        return Classifier.load(model_dir, backend=backend)
    if backend not in {"auto", "torch"}:
        raise ModelError(f"backend {backend!r} needs ticket_triage.inference, which is not installed; use --backend torch")
    return FolderClassifier(model_dir)
