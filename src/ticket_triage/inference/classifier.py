"""`Classifier`: the Python API for classifying tickets with a trained model folder.

    clf = Classifier.load("runs/demo/model")           # the fastest backend on this machine
    clf.predict(["I was charged twice ..."])[0].category

Texts go through `tokenization.encode_for` with the folder's max_length, truncation and
long-text settings, so they are cut exactly as in training: one window per text, or (long_text
"chunks") overlapping windows whose logits are pooled per text. A batch call sorts windows by
token length, runs batches of similar lengths padded only to their own longest member, and
restores the input order. Probabilities are softmax(logits / temperature), the temperature
coming from triage.json.
A folder trained with `--ensemble tfidf` whose triage.json says `enabled` also mixes in its
TF-IDF model: (1 - w) * softmax(logits / T) + w * p_tfidf, in `predict_proba` only, so every
backend, `predict`, files and the service score the same mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError, ModelError
from .backends import open_backend


@dataclass(frozen=True)
class Prediction:
    """One text's result. `category` is always the argmax, even when `needs_review` is set."""

    category: str
    confidence: float
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]] | None = None
    needs_review: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "top_k": [list(pair) for pair in self.top_k] if self.top_k is not None else None,
            "needs_review": self.needs_review,
        }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature (float64 for stable sums)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def empty_text_indices(texts: Sequence[Any]) -> list[int]:
    """Positions of texts that are not strings or hold only whitespace."""
    return [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]


def check_threshold(abstain_below: float | None) -> None:
    if abstain_below is not None and not 0.0 <= float(abstain_below) <= 1.0:
        raise ConfigError(f"abstain_below must be a probability between 0 and 1, got {abstain_below}")


@dataclass
class Classifier:
    """A loaded model folder: tokenizer, backend, labels, temperature and taxonomy."""

    folder: Path | None  # None for a model in memory (`from_model`)
    meta: Any  # ModelMeta
    tokenizer: Any
    backend_impl: Any
    taxonomy: Any = None
    model_version: str = ""
    _pad_id: int = field(default=0, repr=False)
    tfidf: Any = None  # ensemble.TfidfModel when the folder has one (and it is not switched off)
    ensemble_enabled: bool = False  # whether predict_proba mixes it in
    load_options: dict = field(default_factory=dict, repr=False)  # Classifier.load's arguments, for pickling

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        backend: str = "auto",
        threads: int | None = None,
        device: str = "auto",
        ensemble: bool | None = None,
    ) -> "Classifier":
        """Load a model folder. backend: "auto" (the fastest path on this machine, see
        `backends.choose_auto`: PyTorch on a CUDA GPU; on a CPU with AMX-BF16 PyTorch in bf16; else
        ONNX Runtime if an export is present, int8 first; else PyTorch, bf16 where the CPU has it),
        "torch", "torch-bf16" (bf16 weights), "onnx" (int8 if present, else fp32), "onnx-fp32" or
        "onnx-int8". threads: CPU threads for inference (None:
        the backend's default). device: where PyTorch runs: auto (CUDA, MPS, CPU), cpu, cuda[:N], mps.
        ensemble: None follows triage.json (mix the TF-IDF model only where training enabled it),
        True mixes it in whatever validation said, False scores with the transformer alone."""
        from ..modeling import ModelMeta, load_folder_taxonomy, load_tokenizer

        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise ModelError(
                f"model folder {folder} does not exist; give the `model/` folder that `triage train` wrote"
            )
        meta = ModelMeta.load(folder)
        if not meta.labels:
            raise ModelError(f"{folder}/triage.json lists no labels")
        if not meta.temperature or meta.temperature <= 0:
            raise ModelError(f"{folder}/triage.json has temperature {meta.temperature}; it must be positive")
        impl = open_backend(folder, backend, threads, device)
        tokenizer = load_tokenizer(str(folder))
        from .backends import file_digest

        tfidf, enabled = _load_ensemble(folder, meta, ensemble)
        # The mix changes the predictions, so its weights are part of the version.
        from ..ensemble import TFIDF_WEIGHTS_FILE

        weight_files = list(impl.weight_files) + ([folder / TFIDF_WEIGHTS_FILE] if enabled else [])
        # Reduced precision changes the scores a little, so it is part of the version too.
        version = (
            f"{file_digest(weight_files)}-{impl.name}"
            + (f"-{impl.precision}" if impl.precision != "fp32" else "")
            + ("+tfidf" if enabled else "")
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        options = {"backend": backend, "threads": threads, "device": device, "ensemble": ensemble}
        return cls(
            folder, meta, tokenizer, impl, load_folder_taxonomy(folder), version, pad_id, tfidf, enabled, options
        )

    @classmethod
    def from_model(cls, model, tokenizer, meta, *, device, dtype=None) -> "Classifier":
        """A model still in memory (training's validation), scored exactly as a loaded folder would be:
        same tokenization, windows and pooling. No temperature file, ensemble or taxonomy."""
        from .backends import ModuleBackend

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(None, meta, tokenizer, ModuleBackend(model, device, dtype), None, "in-memory", pad_id)

    @property
    def labels(self) -> list[str]:
        return list(self.meta.labels)

    @property
    def backend(self) -> str:
        """ "torch" or "onnx" (see `precision` for fp32 / bf16 / int8)."""
        return self.backend_impl.name

    @property
    def precision(self) -> str:
        return self.backend_impl.precision

    @property
    def backend_label(self) -> str:
        """ "torch-fp32", "torch-bf16", "onnx-int8", ... plus why, when backend="auto" chose it."""
        reason = getattr(self.backend_impl, "auto_reason", "")
        return f"{self.backend}-{self.precision}" + (f" (auto: {reason})" if reason else "")

    @property
    def temperature(self) -> float:
        return float(self.meta.temperature)

    @property
    def ensemble_weight(self) -> float:
        """w in (1 - w) * p_transformer + w * p_tfidf (0.0 without a TF-IDF model)."""
        return float(self.meta.ensemble["weight"]) if self.tfidf is not None else 0.0

    # -- scoring ---------------------------------------------------------------------------
    def _check_texts(self, texts: Sequence[str]) -> None:
        if isinstance(texts, str):
            raise DataError("predict takes a list of texts, not a single string: wrap it as [text]")
        empty = empty_text_indices(texts)
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            raise DataError(
                f"{len(empty)} empty or non-text input(s) at index {shown}: every text must have non-whitespace content"
            )

    def predict_logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits (before temperature), shape (len(texts), len(labels)), in input order.
        With a chunks model, `batch_size` counts windows, and each text's windows are pooled."""
        from ..tokenization import encode_for, pad_batch, pool_window_logits

        self._check_texts(texts)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if not len(texts):
            return np.zeros((0, len(self.meta.labels)), dtype=np.float32)
        ids, owners = encode_for(self.tokenizer, list(texts), self.meta)
        out = np.zeros((len(ids), len(self.meta.labels)), dtype=np.float32)  # one row per window
        # Longest first: batches of similar lengths waste no compute on padding.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch([ids[i] for i in rows], self._pad_id)
            logits = self.backend_impl(input_ids, attention_mask)
            if logits.shape[-1] != out.shape[1]:
                raise ModelError(
                    f"the model outputs {logits.shape[-1]} scores but triage.json lists {out.shape[1]} labels"
                )
            out[rows] = logits
        return pool_window_logits(out, owners, len(texts), self.meta.chunk_pool)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities softmax(logits / T), shape (len(texts), len(labels)); with an
        enabled ensemble, the mix (1 - w) * softmax(logits / T) + w * p_tfidf."""
        if self.ensemble_enabled:
            return self.predict_proba_parts(texts, batch_size)["hybrid"]
        return softmax(self.predict_logits(texts, batch_size), self.temperature)

    def predict_proba_parts(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """{"transformer": softmax(logits / T)}, plus "tfidf" and "hybrid" (the mix at the
        folder's weight) when the folder has a TF-IDF model, enabled or not: for reports."""
        from ..ensemble import mix

        parts = {"transformer": softmax(self.predict_logits(texts, batch_size), self.temperature)}
        if self.tfidf is not None:
            parts["tfidf"] = self.tfidf.predict_proba(list(texts))
            parts["hybrid"] = mix(parts["transformer"], parts["tfidf"], self.ensemble_weight)
        return parts

    def predict(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        top_k: int | None = None,
        abstain_below: float | None = None,
    ) -> list[Prediction]:
        """One `Prediction` per text, in input order. Raises DataError naming empty texts.

        top_k: also list the k most likely categories. abstain_below: predictions whose
        confidence is below this probability get needs_review=True (category stays the argmax).
        """
        check_threshold(abstain_below)
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        probs = self.predict_proba(texts, batch_size)
        return self.predictions_from_proba(probs, top_k=top_k, abstain_below=abstain_below)

    def predictions_from_proba(
        self, probs: np.ndarray, top_k: int | None = None, abstain_below: float | None = None
    ) -> list[Prediction]:
        labels = self.labels
        k = min(top_k, len(labels)) if top_k else None
        results = []
        for row in probs:
            best = int(row.argmax())
            confidence = float(row[best])
            ranked = [(labels[j], float(row[j])) for j in np.argsort(-row, kind="stable")[:k]] if k else None
            results.append(
                Prediction(
                    category=labels[best],
                    confidence=confidence,
                    probabilities={name: float(p) for name, p in zip(labels, row)},
                    top_k=ranked,
                    needs_review=abstain_below is not None and confidence < abstain_below,
                )
            )
        return results

    def __reduce__(self):
        # Pickled as what to load, not as loaded weights (ONNX sessions and CUDA tensors do not
        # pickle): a Spark or Ray worker loads the folder itself, so it must be able to reach it.
        return (_reload, (str(self.folder), self.load_options))

    def __repr__(self) -> str:
        return f"Classifier(folder={str(self.folder)!r}, backend={self.backend!r}, precision={self.precision!r}, labels={self.labels}, model_version={self.model_version!r})"


def _reload(folder: str, options: dict) -> Classifier:
    return Classifier.load(folder, **options)


def _load_ensemble(folder: Path, meta, ensemble: bool | None) -> tuple[Any, bool]:
    """(TfidfModel or None, enabled) for `Classifier.load`'s `ensemble` switch."""
    from ..ensemble import KIND, TFIDF_FILE, TfidfModel

    spec = meta.ensemble
    if ensemble is False:
        return None, False
    if not spec:
        if ensemble:
            raise ModelError(
                f"{folder} has no ensemble (it was trained without --ensemble tfidf): load it with ensemble=None or False"
            )
        return None, False
    if spec.get("kind") != KIND:
        raise ModelError(
            f"{folder}/triage.json names an unknown ensemble kind {spec.get('kind')!r}; this version knows {KIND!r}: load with ensemble=False"
        )
    enabled = bool(spec.get("enabled")) if ensemble is None else True
    if not enabled and not (folder / TFIDF_FILE).is_file():
        return None, False  # a disabled mix whose files were left behind: the transformer alone, as triage.json says
    tfidf = TfidfModel.load(folder)
    if tfidf.labels != list(meta.labels):
        raise ModelError(
            f"the TF-IDF model in {folder} predicts {tfidf.labels} but triage.json lists {meta.labels}; retrain with --ensemble tfidf"
        )
    return tfidf, enabled
