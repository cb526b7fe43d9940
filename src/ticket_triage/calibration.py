"""Calibrated confidence: temperature scaling, calibration error, reliability and coverage.

A fine-tuned classifier is usually over-confident: of the tickets it scores at 0.95, far
fewer than 95% are right. Temperature scaling (Guo et al. 2017, "On Calibration of Modern
Neural Networks") divides the logits by one scalar T > 0 fitted on the validation split by
minimising the negative log-likelihood; the argmax (and so accuracy) does not change, only
how much the confidence can be trusted. T is stored in triage.json and every backend applies
softmax(logits / T), so `--abstain-below 0.8` means "route automatically when at least 80%
likely to be right".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataError

CALIBRATION_FILE = "calibration.json"
RELIABILITY_PNG = "reliability_diagram.png"
COVERAGE_PNG = "coverage.png"
DEFAULT_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


def _check(probs_or_logits: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(probs_or_logits, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[1] < 2:
        raise DataError(f"{what} must be a 2-D array (n, classes) with at least 2 classes, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"labels must be a 1-D array of {len(x)} class indices, got shape {y.shape}")
    if len(x) == 0:
        raise DataError(f"{what} is empty: calibration needs labelled examples")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= x.shape[1]:
        raise DataError(f"labels must be integer class indices in [0, {x.shape[1] - 1}]")
    return x, y.astype(np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, weights: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T); with per-class
    `weights`, the weighted mean that torch's CrossEntropyLoss(weight=...) reports."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    picked = -(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(labels)), labels]
    if weights is None:
        return float(picked.mean())
    w = np.asarray(weights, dtype=np.float64)[labels]
    return float((picked * w).sum() / w.sum())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T): LBFGS on log T (keeps T positive)."""
    import torch

    x, y = _check(logits, labels, "logits")
    z = torch.tensor(x, dtype=torch.float64)
    target = torch.tensor(y)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(z / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.exp().item())
    if not np.isfinite(temperature) or temperature <= 0:
        return 1.0
    # Clamp to a sane range: extremely separable data drives T towards 0.
    return float(np.clip(temperature, 0.05, 100.0))


def _bins(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; confidence 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    p, y = _check(probs, labels, "probs")
    total = len(y)
    return float(
        sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in _bins(p, y, n_bins) if r["count"])
    )


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, title: str | None = None, ax=None):
    """Accuracy per confidence bin against the diagonal of perfect calibration (a Figure)."""
    from matplotlib.figure import Figure

    p, y = _check(probs, labels, "probs")
    rows = _bins(p, y, n_bins)
    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    width = 1.0 / n_bins
    centers = [r["lower"] + width / 2 for r in rows]
    acc = [r["accuracy"] or 0.0 for r in rows]
    conf = [r["confidence"] or 0.0 for r in rows]
    ax.bar(centers, acc, width=width * 0.95, color="#4c72b0", edgecolor="white", label="accuracy")
    low, gap = np.minimum(acc, conf), np.abs(np.array(conf) - np.array(acc))
    ax.bar(centers, gap, bottom=low, width=width * 0.95, color="#dd8452", alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ece = expected_calibration_error(p, y, n_bins)
    ax.set_title(f"{title + ': ' if title else ''}ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def coverage_curve(
    probs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """For each threshold: the share of tickets routed automatically (confidence >= threshold)
    and the accuracy on those; the rest go to human review."""
    p, y = _check(probs, labels, "probs")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    out = []
    for t in thresholds:
        routed = confidence >= t
        n = int(routed.sum())
        out.append(
            {
                "threshold": float(t),
                "auto_routed_share": n / len(y),
                "accuracy_on_routed": float(correct[routed].mean()) if n else None,
            }
        )
    return out


def coverage_plot(
    probs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] | None = None, title: str | None = None
):
    """Share auto-routed and accuracy on it, against the abstention threshold (a Figure)."""
    from matplotlib.figure import Figure

    grid = np.linspace(0.0, 0.99, 100) if thresholds is None else thresholds
    rows = coverage_curve(probs, labels, grid)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    xs = [r["threshold"] for r in rows]
    ax.plot(xs, [r["auto_routed_share"] for r in rows], label="share auto-routed", color="#4c72b0")
    ax.plot(
        xs,
        [r["accuracy_on_routed"] if r["accuracy_on_routed"] is not None else np.nan for r in rows],
        label="accuracy on routed",
        color="#55a868",
    )
    ax.set_xlabel("abstain below (confidence threshold)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "Coverage vs. accuracy")
    return fig


@dataclass
class CalibrationReport:
    temperature: float
    previous_temperature: float
    n: int
    skipped: int
    accuracy: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    coverage: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    ensemble: dict[str, Any] | None = None  # the TF-IDF hybrid's weight, chosen again at the new temperature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_model(
    model_dir: str | Path,
    val_data: str | Path,
    out_dir: str | Path | None = None,
    *,
    text_column: str | None = None,
    batch_size: int = 32,
    max_rows: int | None = None,
) -> CalibrationReport:
    """Fit the temperature on a labelled validation file and store it in the model's triage.json.

    "Before" is the model with T = 1 (raw logits). Writes calibration.json,
    reliability_diagram.png and coverage.png into `out_dir` (default: the model folder).
    A folder with a TF-IDF hybrid (`--ensemble tfidf`) also gets its mixing weight, and whether the
    mix is on, chosen again on the same data at the new temperature: the old weight was fitted to
    the old probabilities."""
    from .inference import Classifier
    from .inference.backends import torch_weight_files
    from .inference.files import read_labelled

    model_dir = Path(model_dir)
    backend = "torch" if model_dir.is_dir() and torch_weight_files(model_dir) else "auto"
    clf = Classifier.load(model_dir, backend=backend)
    texts, y, skipped = read_labelled(val_data, clf.labels, clf.taxonomy, text_column=text_column, max_rows=max_rows)
    logits = clf.predict_logits(texts, batch_size)
    return calibrate_scored(model_dir, texts, y, logits, out_dir, val_data=val_data, skipped=skipped)


def calibrate_scored(
    model_dir: str | Path,
    texts: list[str],
    y: np.ndarray,
    logits: np.ndarray,
    out_dir: str | Path | None = None,
    *,
    val_data: str | Path = "",
    skipped: int = 0,
) -> CalibrationReport:
    """`calibrate_model` on texts already scored (raw logits, T = 1): what the end of a training run
    calls with the validation logits it has, so the split is scored once."""
    from .inference.classifier import softmax
    from .modeling import ModelMeta

    model_dir = Path(model_dir)
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits, 1.0), softmax(logits, temperature)

    meta = ModelMeta.load(model_dir)
    previous = float(meta.temperature)
    meta.temperature = temperature
    hybrid = _refit_ensemble(model_dir, meta, texts, y, after) if meta.ensemble else None
    meta.save(model_dir)

    out = Path(out_dir) if out_dir is not None else model_dir
    out.mkdir(parents=True, exist_ok=True)
    report = CalibrationReport(
        temperature=temperature,
        previous_temperature=previous,
        n=len(y),
        skipped=skipped,
        accuracy=float((before.argmax(1) == y).mean()),
        ece_before=expected_calibration_error(before, y),
        ece_after=expected_calibration_error(after, y),
        nll_before=nll(logits, y, 1.0),
        nll_after=nll(logits, y, temperature),
        coverage=coverage_curve(after, y),
        ensemble=hybrid,
    )
    fig = reliability_diagram(after, y, title=f"T={temperature:.2f}")
    fig.savefig(out / RELIABILITY_PNG, dpi=100, bbox_inches="tight")
    coverage_plot(after, y).savefig(out / COVERAGE_PNG, dpi=100, bbox_inches="tight")
    report.files = {
        "calibration": str(out / CALIBRATION_FILE),
        "reliability_diagram": str(out / RELIABILITY_PNG),
        "coverage": str(out / COVERAGE_PNG),
        "triage.json": str(model_dir / "triage.json"),
    }
    (out / CALIBRATION_FILE).write_text(
        json.dumps({**report.to_dict(), "val_data": str(val_data), "reliability_bins": _bins(after, y, 15)}, indent=2)
    )
    return report


def _refit_ensemble(model_dir: Path, meta, texts, y: np.ndarray, p_transformer: np.ndarray) -> dict[str, Any] | None:
    """Choose the hybrid's weight again (validation macro-F1, as training does) and update
    `meta.ensemble`; returns {previous_weight, weight, enabled, val_macro_f1}."""
    from . import ensemble as ens

    if meta.ensemble.get("kind") != ens.KIND or not (Path(model_dir) / ens.TFIDF_FILE).is_file():
        return None  # an unknown kind or a folder without its TF-IDF files: left as it is
    tfidf = ens.TfidfModel.load(model_dir)
    previous = float(meta.ensemble.get("weight", 0.0))
    kept = {
        k: v
        for k, v in meta.ensemble.items()
        if k not in ("kind", "weight", "enabled", "file", "weights_file", "val_macro_f1")
    }
    meta.ensemble, _, _ = ens.fit_weight(p_transformer, tfidf.predict_proba(texts), y, meta.labels, kept)
    return {
        "previous_weight": previous,
        "weight": meta.ensemble["weight"],
        "enabled": meta.ensemble["enabled"],
        "val_macro_f1": meta.ensemble["val_macro_f1"],
    }
