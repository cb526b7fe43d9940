"""`--ensemble tfidf`: a TF-IDF linear model mixed with the transformer, stored without pickle.

    p = (1 - w) * p_transformer + w * p_tfidf

Both parts are calibrated probabilities: the transformer's softmax(logits / T) and the TF-IDF
model's softmax(scores / T_tfidf), each temperature fitted on the validation split. The weight w
is picked on validation from a grid by macro-F1 (ties: lower log-loss), and the mix is switched
on in triage.json only when it beats both models alone on validation.

The linear model is a multinomial logistic regression rather than the baseline's LinearSVC with
CalibratedClassifierCV: it optimises log-loss directly, so its scores are already probabilities
that one temperature puts right, and it stores as one coefficient matrix + intercepts (a
calibrated SVC is several fold models plus a calibrator each).

Files in the model folder (nothing pickled; scikit-learn objects are rebuilt at load time):

    tfidf.json          settings, labels, temperature, and the vocabulary as terms in column order
    tfidf.safetensors   idf (V,), coef (C, V), intercept (C,), all float64
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ModelError

TFIDF_FILE = "tfidf.json"
TFIDF_WEIGHTS_FILE = "tfidf.safetensors"
KIND = "tfidf"
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0
C_GRID = (1.0, 4.0, 16.0)  # a light search: each value is one fit on train
MAX_FEATURES = 100_000  # keeps tfidf.json to a few MB
VECTORIZER = {"ngram_range": [1, 2], "sublinear_tf": True, "lowercase": True, "min_df": 2, "max_features": MAX_FEATURES}


def _softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mix(p_transformer: np.ndarray, p_tfidf: np.ndarray, weight: float) -> np.ndarray:
    """The hybrid's probabilities: (1 - w) * p_transformer + w * p_tfidf (rows still sum to 1)."""
    return (1.0 - float(weight)) * np.asarray(p_transformer, dtype=np.float64) + float(weight) * np.asarray(
        p_tfidf, dtype=np.float64
    )


@dataclass
class TfidfModel:
    """TF-IDF (word 1-2 grams, sublinear tf) + linear scores, softmax over scores / temperature."""

    vocabulary: list[str]
    idf: np.ndarray  # (V,)
    coef: np.ndarray  # (C, V)
    intercept: np.ndarray  # (C,)
    labels: list[str]
    temperature: float = 1.0
    settings: dict[str, Any] = field(default_factory=lambda: dict(VECTORIZER))
    _vectorizer: Any = field(default=None, repr=False, compare=False)

    def vectorizer(self):
        """A scikit-learn TfidfVectorizer rebuilt from the stored vocabulary and idf (no refit)."""
        if self._vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(
                ngram_range=tuple(self.settings["ngram_range"]),
                sublinear_tf=bool(self.settings["sublinear_tf"]),
                lowercase=bool(self.settings["lowercase"]),
                vocabulary={term: i for i, term in enumerate(self.vocabulary)},
                dtype=np.float64,
            )
            vec.idf_ = np.asarray(self.idf, dtype=np.float64)
            self._vectorizer = vec
        return self._vectorizer

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Linear scores (N, C) before the temperature."""
        x = self.vectorizer().transform(list(texts))
        return np.asarray(x @ self.coef.T) + self.intercept

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return _softmax(self.scores(texts), self.temperature)

    # -- storage ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> list[str]:
        from safetensors.numpy import save_file

        folder = Path(folder)
        arrays = {"idf": self.idf, "coef": self.coef, "intercept": self.intercept}
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(folder / TFIDF_WEIGHTS_FILE)
        )
        spec = {
            "kind": KIND,
            "labels": list(self.labels),
            "temperature": float(self.temperature),
            "settings": self.settings,
            "weights_file": TFIDF_WEIGHTS_FILE,
            "vocabulary": list(self.vocabulary),
        }
        (folder / TFIDF_FILE).write_text(json.dumps(spec))
        return [TFIDF_FILE, TFIDF_WEIGHTS_FILE]

    @classmethod
    def load(cls, folder: str | Path) -> "TfidfModel":
        from safetensors.numpy import load_file

        folder = Path(folder)
        spec_path, weights_path = folder / TFIDF_FILE, folder / TFIDF_WEIGHTS_FILE
        if not (spec_path.is_file() and weights_path.is_file()):
            raise ModelError(
                f"{folder} lacks {TFIDF_FILE} or {TFIDF_WEIGHTS_FILE}, which its triage.json ensemble needs: copy them from the training run's model/ folder, or load with ensemble=False"
            )
        try:
            spec = json.loads(spec_path.read_text())
            arrays = load_file(str(weights_path))
        except Exception as exc:  # JSON, OS and safetensors' own error types
            raise ModelError(
                f"cannot read the TF-IDF model in {folder}: {str(exc).splitlines()[0]}; retrain with --ensemble tfidf or load with ensemble=False"
            ) from None
        missing = sorted(
            ({"vocabulary", "labels", "temperature", "settings"} - set(spec))
            | ({"idf", "coef", "intercept"} - set(arrays))
        )
        if missing:
            raise ModelError(
                f"the TF-IDF model in {folder} lacks {', '.join(missing)}; retrain with --ensemble tfidf or load with ensemble=False"
            )
        model = cls(
            spec["vocabulary"],
            arrays["idf"],
            arrays["coef"],
            arrays["intercept"],
            list(spec["labels"]),
            float(spec["temperature"]),
            dict(spec["settings"]),
        )
        if model.coef.shape != (len(model.labels), len(model.vocabulary)) or model.idf.shape != (
            len(model.vocabulary),
        ):
            raise ModelError(
                f"the TF-IDF model in {folder} is inconsistent (coef {model.coef.shape}, {len(model.vocabulary)} terms, {len(model.labels)} labels); retrain with --ensemble tfidf"
            )
        return model


# ---------------------------------------------------------------------------------------------
# Fitting (at the end of training)
# ---------------------------------------------------------------------------------------------
def _full_rows(lr, values: np.ndarray, n_labels: int, fill: float) -> np.ndarray:
    """Rows of `values` (one per class the model saw) placed at their label ids; absent classes get `fill`."""
    out = np.full((n_labels,) + values.shape[1:], fill, dtype=np.float64)
    out[np.asarray(lr.classes_, dtype=int)] = values
    return out


def _from_sklearn(vec, lr, labels: list[str], settings: dict[str, Any]) -> TfidfModel:
    # Copies: with warm_start the next fit starts from these and must not change the stored ones.
    coef, intercept = np.array(lr.coef_, dtype=np.float64), np.array(lr.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # two classes: sklearn keeps one row; softmax([0, s]) == sigmoid(s)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    # A class missing from train can never be predicted: zero weights and a very low intercept.
    coef = _full_rows(lr, coef, len(labels), 0.0)
    intercept = _full_rows(lr, intercept, len(labels), float(intercept.min()) - 30.0)
    vocabulary = vec.get_feature_names_out().tolist()
    return TfidfModel(
        vocabulary, np.asarray(vec.idf_, dtype=np.float64), coef, intercept, list(labels), 1.0, dict(settings)
    )


def fit_tfidf(
    train_texts: Sequence[str],
    train_y: np.ndarray,
    val_texts: Sequence[str],
    val_y: np.ndarray,
    labels: Sequence[str],
    *,
    seed: int = 42,
    class_weight: str | None = None,
    c_grid: Sequence[float] = C_GRID,
) -> tuple[TfidfModel, dict[str, Any]]:
    """Fit on train; pick C and the temperature on validation by log-loss. Returns (model, report)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from .calibration import fit_temperature

    settings = dict(VECTORIZER)
    vec = TfidfVectorizer(
        ngram_range=tuple(settings["ngram_range"]),
        sublinear_tf=True,
        lowercase=True,
        min_df=settings["min_df"],
        max_features=MAX_FEATURES,
        dtype=np.float64,
    )
    try:
        x_train = vec.fit_transform(list(train_texts))
    except ValueError:  # min_df=2 on a handful of texts can leave no terms at all
        settings["min_df"] = 1
        vec.set_params(min_df=1)
        x_train = vec.fit_transform(list(train_texts))
    val_y = np.asarray(val_y)
    tried = []
    best = None
    # Ascending C with warm starts: each fit begins at the previous, smoother solution.
    lr = LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=seed, warm_start=True)
    for c in sorted(c_grid):
        lr.set_params(C=float(c)).fit(x_train, np.asarray(train_y))
        model = _from_sklearn(vec, lr, list(labels), {**settings, "C": float(c)})
        scores = model.scores(val_texts)
        model.temperature = fit_temperature(scores, val_y)
        loss = float(log_loss(val_y, model.predict_proba(val_texts), labels=list(range(len(labels)))))
        tried.append({"C": float(c), "temperature": model.temperature, "val_log_loss": loss})
        if best is None or loss < best[0]:
            best = (loss, model)
    return best[1], {
        "c_grid": tried,
        "C": best[1].settings["C"],
        "temperature": best[1].temperature,
        "vocabulary_size": len(best[1].vocabulary),
    }


def choose_weight(
    p_transformer: np.ndarray, p_tfidf: np.ndarray, y: np.ndarray, n_labels: int, grid: Sequence[float] = WEIGHT_GRID
) -> tuple[float, list[dict[str, float]]]:
    """The grid weight with the best validation macro-F1 of the mix (ties: lower log-loss, then smaller w)."""
    from sklearn.metrics import f1_score, log_loss

    ids = list(range(n_labels))
    rows = []
    for w in grid:
        p = mix(p_transformer, p_tfidf, w)
        rows.append(
            {
                "weight": float(w),
                "macro_f1": float(f1_score(y, p.argmax(1), labels=ids, average="macro", zero_division=0)),
                "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1.0), labels=ids)),
            }
        )
    best = min(rows, key=lambda r: (-round(r["macro_f1"], 12), r["log_loss"], r["weight"]))
    return best["weight"], rows


def fit_weight(
    p_transformer: np.ndarray,
    p_tfidf: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, float]]]:
    """Choose the mix on labelled (validation) probabilities, as training and `triage calibrate` do:
    (the triage.json `ensemble` entry, transformer / TF-IDF / hybrid scores there, the weight grid)."""
    weight, grid = choose_weight(p_transformer, p_tfidf, y, len(labels))
    scores = compare_models(
        y, {"transformer": p_transformer, "tfidf": p_tfidf, "hybrid": mix(p_transformer, p_tfidf, weight)}, labels
    )
    return ensemble_meta(weight, {k: v["macro_f1"] for k, v in scores.items()}, extra), scores, grid


def should_enable(val_macro_f1: dict[str, float]) -> bool:
    """Ship the mix only where it beats both models alone on validation (strictly)."""
    return val_macro_f1["hybrid"] > val_macro_f1["transformer"] and val_macro_f1["hybrid"] > val_macro_f1["tfidf"]


def ensemble_meta(weight: float, val_macro_f1: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `ensemble` entry of triage.json."""
    return {
        "kind": KIND,
        "weight": float(weight),
        "enabled": should_enable(val_macro_f1),
        "file": TFIDF_FILE,
        "weights_file": TFIDF_WEIGHTS_FILE,
        "val_macro_f1": {k: float(v) for k, v in val_macro_f1.items()},
        **(extra or {}),
    }


def compare_models(y: np.ndarray, probs: dict[str, np.ndarray], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Macro-F1, accuracy and per-category recall of each named probability matrix."""
    from .evaluation.metrics import classification_metrics

    out = {}
    for name, p in probs.items():
        m = classification_metrics(y, np.asarray(p).argmax(1), labels)
        out[name] = {
            "macro_f1": m["macro_f1"],
            "accuracy": m["accuracy"],
            "recall": {c: row["recall"] for c, row in m["per_class"].items()},
        }
    return out
