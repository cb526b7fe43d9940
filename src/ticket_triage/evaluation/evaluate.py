"""`triage evaluate` and `triage baseline`: the same report for any labelled file or prepared splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .metrics import classification_metrics
from .report import write_json, write_report


def evaluate_model(
    model_dir: str | Path,
    data_file: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    text_column: str | None = None,
    label_column: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> dict[str, Any]:
    """Score a trained model folder on a labelled file; writes metrics.json, report and confusion matrix.

    Scores through `Classifier`, so the folder is judged as it predicts (backend, temperature,
    ensemble); with a TF-IDF ensemble the transformer, TF-IDF and hybrid are reported side by side."""
    from ..data.io import read_labelled_file
    from ..ensemble import compare_models
    from ..inference import Classifier
    from ..taxonomy import Taxonomy
    from .slices import add_slices

    clf = Classifier.load(model_dir, backend=backend, device=device)
    taxonomy = clf.taxonomy or Taxonomy(name="model-labels", categories=tuple(clf.labels))
    frame, read_report = read_labelled_file(data_file, taxonomy, text_column=text_column, label_column=label_column)
    if frame.empty:
        raise DataError(f"{data_file} has no rows with a text and a known label to evaluate on")
    names = frame["label"].astype(str).tolist()
    index = {name: i for i, name in enumerate(clf.labels)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"{data_file} has labels the model does not know: {unknown}; the model predicts {clf.labels}")
    y_true = np.array([index[n] for n in names])
    parts = clf.predict_proba_parts(frame["text"].astype(str).tolist(), batch_size)
    shipped = parts["hybrid"] if clf.ensemble_enabled else parts["transformer"]
    metrics = classification_metrics(y_true, shipped.argmax(1), clf.labels)
    sources = (
        frame["source"].fillna(Path(data_file).name).tolist()
        if "source" in frame
        else [Path(data_file).name] * len(frame)
    )
    add_slices(metrics, y_true, shipped.argmax(1), sources, frame["date_received"].tolist())
    metrics["input"] = {"file": str(data_file), **read_report}
    metrics["model"] = {
        "folder": str(Path(model_dir).resolve()),
        "backend": clf.backend,
        "precision": clf.precision,
        "model_version": clf.model_version,
    }
    ensemble = None
    if clf.tfidf is not None:
        ensemble = {
            **clf.meta.ensemble,
            "enabled": clf.ensemble_enabled,
            "scores": {Path(data_file).name: compare_models(y_true, parts, clf.labels)},
        }
        metrics["ensemble"] = ensemble
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = [
        f"model: {Path(model_dir).resolve()} ({clf.backend}, {clf.precision}{', with its TF-IDF ensemble' if clf.ensemble_enabled else ''})",
        f"data: {data_file}",
    ]
    if read_report.get("unknown_rows"):
        notes.append(
            f"rows with products the taxonomy does not know (left out): {read_report['unknown_rows']} {read_report.get('unknown_products', {})}"
        )
    if read_report.get("no_text"):
        notes.append(f"rows without text (left out): {read_report['no_text']}")
    write_json(out_dir / "metrics.json", metrics)
    write_report(out_dir, metrics, title="Evaluation: classification report", notes=notes, ensemble=ensemble)
    return metrics


def baseline_on_splits(data_dir: str | Path, out_dir: str | Path, seed: int = 42) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams) + linear SVM trained on train, scored on test, same report."""
    from ..data.io import load_splits
    from .baseline import run_baseline

    splits, labels = load_splits(data_dir)
    metrics = run_baseline(
        splits["train"].texts, splits["train"].labels, splits["test"].texts, splits["test"].labels, labels, seed
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_report(
        out_dir,
        metrics,
        title="Test split: TF-IDF + linear SVM baseline",
        notes=[f"data: {data_dir}", f"fit in {metrics['wall_time_s']} s"],
    )
    return metrics
