"""`triage evaluate` and `triage baseline`: the same report for any labelled file or prepared splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .metrics import classification_metrics
from .report import write_json, write_report


def read_labelled(path: str | Path, taxonomy, text_column: str | None = None, label_column: str | None = None) -> tuple[list[str], list[str], dict[str, Any]]:
    """Texts and category names from a prepared split (text, label) or a raw CFPB-format file.

    Raw `Product` values are mapped with `taxonomy` (the one stored in the model folder);
    rows whose product is unknown or dropped are counted in the returned report.
    """
    from ..data import read_labelled_file

    frame, report = read_labelled_file(path, taxonomy, text_column=text_column, label_column=label_column)
    return frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist(), report


def evaluate_model(model_dir: str | Path, data_file: str | Path, out_dir: str | Path, *, batch_size: int = 64, text_column: str | None = None, label_column: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a trained model folder on a labelled file; writes metrics.json, report and confusion matrix."""
    from ..modeling import load_folder_taxonomy, load_model_folder, pick_device
    from ..taxonomy import Taxonomy
    from ..tokenization import encode_texts
    from ..training.loop import pick_precision, predict_logits

    device_ = pick_device(device)
    model, tokenizer, meta = load_model_folder(model_dir, device=str(device_))
    taxonomy = load_folder_taxonomy(model_dir) or Taxonomy(name="model-labels", categories=tuple(meta.labels))
    texts, names, read_report = read_labelled(data_file, taxonomy, text_column, label_column)
    if not texts:
        raise DataError(f"{data_file} has no rows with a text and a known label to evaluate on")
    index = {name: i for i, name in enumerate(meta.labels)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"{data_file} has labels the model does not know: {unknown}; the model predicts {meta.labels}")
    y_true = np.array([index[n] for n in names])
    ids = encode_texts(tokenizer, texts, meta.max_length, meta.truncation)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logits = predict_logits(model, ids, pad_id, device_, pick_precision("auto", device_), batch_size, progress="evaluate")
    metrics = classification_metrics(y_true, logits.argmax(1), meta.labels)
    metrics["input"] = {"file": str(data_file), **read_report}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = [f"model: {Path(model_dir).resolve()}", f"data: {data_file}"]
    if read_report.get("unknown_rows"):
        notes.append(f"rows with products the taxonomy does not know (left out): {read_report['unknown_rows']} {read_report.get('unknown_products', {})}")
    if read_report.get("no_text"):
        notes.append(f"rows without text (left out): {read_report['no_text']}")
    write_json(out_dir / "metrics.json", metrics)
    write_report(out_dir, metrics, title="Evaluation: classification report", notes=notes)
    return metrics


def baseline_on_splits(data_dir: str | Path, out_dir: str | Path, seed: int = 42) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams) + linear SVM trained on train, scored on test, same report."""
    from ..training.data import load_splits
    from .baseline import run_baseline

    splits, labels = load_splits(data_dir)
    metrics = run_baseline(splits["train"].texts, splits["train"].labels, splits["test"].texts, splits["test"].labels, labels, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_report(out_dir, metrics, title="Test split: TF-IDF + linear SVM baseline", notes=[f"data: {data_dir}", f"fit in {metrics['wall_time_s']} s"])
    return metrics
