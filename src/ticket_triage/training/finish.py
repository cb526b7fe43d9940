"""The end of a training run: the best epoch scored on validation and test (once each, through
`inference.Classifier`), calibration, the baseline, the optional TF-IDF hybrid, reports, MLflow.

The run folder it adds to:
    metrics.json             per-epoch history, test metrics, baseline, timings
    classification_report.md, confusion_matrix.png, loss_curves.png
    calibration.json, reliability_diagram.png, coverage.png
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..evaluation.metrics import classification_metrics
from ..evaluation.report import save_loss_curves, write_json, write_report
from .config import TrainConfig
from .loop import TrainedRun, _precision_name


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    history: list[dict[str, Any]]
    test: dict[str, Any]
    best_epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Scores:
    """Raw logits (T = 1) of the shipped model folder's transformer on validation and test."""

    val: np.ndarray
    test: np.ndarray


def finish_run(run: TrainedRun, *, log: Callable[[str], None] = print) -> TrainResult:
    """Score the best epoch's model folder, fit calibration, the baseline and the hybrid, write reports."""
    config, model_dir, splits = run.config, run.model_dir, run.splits
    scores = _score_splits(run)
    baseline = _baseline(config, splits, run.labels)
    calibration = _calibrate(run, scores.val, log) if config.calibrate else None
    ensemble = _fit_ensemble(run, scores, log) if config.ensemble == "tfidf" else None
    # The report scores what the model folder predicts: the hybrid where the ensemble is on.
    test_pred = ensemble.pop("test_pred") if ensemble else scores.test.argmax(1)
    test = _test_metrics(splits["test"].labels, test_pred, run.labels, run.data_dir)
    metrics = _metrics(run, test=test, baseline=baseline, calibration=calibration, ensemble=ensemble)
    write_json(run.out_dir / "metrics.json", metrics)
    write_json(model_dir / "metrics.json", metrics)
    notes = _notes(run, calibration, ensemble)
    write_report(
        run.out_dir,
        test,
        title="Test split: classification report",
        baseline_macro_f1=baseline["macro_f1"] if baseline else None,
        notes=notes,
        ensemble=ensemble,
    )
    save_loss_curves(run.out_dir, run.state.history)
    _log_mlflow(config, run.out_dir, metrics, log)
    log(_summary(test, baseline, ensemble))
    return TrainResult(
        out_dir=run.out_dir,
        model_dir=model_dir,
        history=run.state.history,
        test=test,
        best_epoch=run.state.best_epoch,
        metrics=metrics,
    )


def _score_splits(run: TrainedRun) -> _Scores:
    """Validation and test through one `Classifier` on the saved folder: what calibration, the
    hybrid and the test report all read, so no split is scored twice."""
    from ..inference import Classifier

    clf = Classifier.load(run.model_dir, backend="torch", device=str(run.device), ensemble=False)
    batch = run.config.eval_batch_size
    return _Scores(
        val=clf.predict_logits(run.splits["val"].texts, batch), test=clf.predict_logits(run.splits["test"].texts, batch)
    )


def _baseline(config: TrainConfig, splits, labels) -> dict[str, Any] | None:
    # TF-IDF models fit on the whole training split: --max-train-rows caps the transformer's
    # compute, and a baseline (or hybrid half) held to the same cap would flatter the comparison.
    if not config.baseline:
        return None
    from ..evaluation.baseline import run_baseline

    train, test = splits["train"], splits["test"]
    baseline = run_baseline(train.texts, train.labels, test.texts, test.labels, labels, config.seed)
    baseline["train_rows"] = len(train)
    return baseline


def _metrics(run: TrainedRun, **parts: Any) -> dict[str, Any]:
    state = run.state
    return {
        "history": state.history,
        "best_epoch": state.best_epoch,
        **parts,
        "train_rows": run.train_rows,
        "wall_time_s": round(state.train_seconds, 2),
        "train_samples_per_s": round(state.train_samples / max(state.train_seconds, 1e-9), 2),
        "device": str(run.device),
        "precision": _precision_name(run.amp_dtype),
        "config": run.config.to_dict(),
        "run": run.run_info or {},
    }


def _notes(run: TrainedRun, calibration, ensemble) -> list[str]:
    notes = [
        f"best epoch {run.state.best_epoch} of {len(run.state.history)}"
        + (" (early stop)" if run.stopped_early else "")
    ]
    if calibration:
        notes.append(
            f"calibration: temperature {calibration['temperature']:.3f}, validation ECE {calibration['val_ece_before']:.4f} -> {calibration['val_ece_after']:.4f} (reliability_diagram.png, coverage.png)"
        )
    if ensemble:
        notes.append(
            f"scored as shipped: {'transformer + TF-IDF hybrid' if ensemble['enabled'] else 'transformer alone (the hybrid did not beat both on validation)'}; all three compared below"
        )
    return notes


def _summary(test, baseline, ensemble) -> str:
    summary = f"test macro-F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}"
    if baseline:
        summary += f" (TF-IDF + SVM baseline macro-F1 {baseline['macro_f1']:.4f})"
    if ensemble:
        summary += f"; ensemble {'on' if ensemble['enabled'] else 'off'} (transformer alone {ensemble['scores']['test']['transformer']['macro_f1']:.4f})"
    return summary


def _test_metrics(y_true, y_pred, labels, data_dir) -> dict[str, Any]:
    """The test split's metrics with the per-source and per-year tables (evaluation/slices.py)."""
    from ..evaluation.slices import add_slices, default_source_name, split_slice_columns

    sources, dates = split_slice_columns(Path(data_dir) / "test.parquet", default_source_name(data_dir))
    return add_slices(classification_metrics(y_true, y_pred, labels), y_true, y_pred, sources, dates)


def _fit_ensemble(run: TrainedRun, scores: _Scores, log) -> dict[str, Any]:
    """`--ensemble tfidf`: fit the TF-IDF model (the whole training split), its weight (validation), store both in the
    model folder, and compare transformer, TF-IDF and hybrid on validation and test.

    Runs after calibration: the transformer's probabilities are mixed at its fitted temperature."""
    from .. import ensemble as ens
    from ..inference.classifier import softmax
    from ..modeling import ModelMeta

    config, splits, labels, model_dir = run.config, run.splits, run.labels, run.model_dir
    val, test, train = splits["val"], splits["test"], splits["train"]
    temperature = ModelMeta.load(model_dir).temperature
    p_val = {"transformer": softmax(scores.val, temperature)}
    p_test = {"transformer": softmax(scores.test, temperature)}
    tfidf, fit_report = ens.fit_tfidf(
        train.texts,
        train.labels,
        val.texts,
        val.labels,
        labels,
        seed=config.seed,
        class_weight="balanced" if config.class_weights == "balanced" else None,
    )
    fit_report["train_rows"] = len(train)
    p_val["tfidf"], p_test["tfidf"] = tfidf.predict_proba(val.texts), tfidf.predict_proba(test.texts)
    spec, val_scores, grid = ens.fit_weight(
        p_val["transformer"],
        p_val["tfidf"],
        val.labels,
        labels,
        {"C": fit_report["C"], "tfidf_temperature": fit_report["temperature"]},
    )
    p_test["hybrid"] = ens.mix(p_test["transformer"], p_test["tfidf"], spec["weight"])
    tfidf.save(model_dir)
    meta = ModelMeta.load(model_dir)
    meta.ensemble = spec
    meta.save(model_dir)
    f1 = spec["val_macro_f1"]
    log(
        f"ensemble: TF-IDF weight {spec['weight']:.2f}, validation macro-F1 transformer {f1['transformer']:.4f}, TF-IDF {f1['tfidf']:.4f}, hybrid {f1['hybrid']:.4f}: {'on' if spec['enabled'] else 'off (does not beat both)'}"
    )
    shipped = p_test["hybrid"] if spec["enabled"] else p_test["transformer"]
    scores_out = {"validation": val_scores, "test": ens.compare_models(test.labels, p_test, labels)}
    return {**spec, "scores": scores_out, "tfidf": fit_report, "weight_grid": grid, "test_pred": shipped.argmax(1)}


def _calibrate(run: TrainedRun, val_logits: np.ndarray, log) -> dict[str, Any]:
    """Temperature scaling on the validation split; stored in the model folder for every backend.

    Also writes calibration.json, reliability_diagram.png and coverage.png (the share of tickets
    auto-routed, and their accuracy, per confidence threshold) into the run folder."""
    from ..calibration import calibrate_scored

    val = run.splits["val"]
    report = calibrate_scored(
        run.model_dir, val.texts, val.labels, val_logits, run.out_dir, val_data=run.data_dir / "val.parquet"
    )
    log(
        f"calibration: temperature {report.temperature:.3f}, validation ECE {report.ece_before:.4f} -> {report.ece_after:.4f}"
    )
    return {
        "temperature": report.temperature,
        "val_ece_before": report.ece_before,
        "val_ece_after": report.ece_after,
        "coverage": report.coverage,
    }


def _log_mlflow(config: TrainConfig, out_dir: Path, metrics: dict[str, Any], log) -> None:
    if not (config.mlflow or os.environ.get("MLFLOW_TRACKING_URI")):
        return
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "MLflow logging asked for, but mlflow is not installed: pip install 'ticket-triage[mlflow]'"
        ) from None
    try:
        with mlflow.start_run(run_name=out_dir.name):
            mlflow.log_params({k: v for k, v in config.to_dict().items() if v is not None})
            for record in metrics["history"]:
                mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=record["epoch"])
            mlflow.log_metrics(
                {"test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy": metrics["test"]["accuracy"]}
            )
            for name in (
                "metrics.json",
                "classification_report.md",
                "confusion_matrix.png",
                "loss_curves.png",
                "train_config.yaml",
            ):
                if (out_dir / name).exists():
                    mlflow.log_artifact(str(out_dir / name))
    except Exception as exc:  # the run's own files are written already: a tracking failure must not lose them
        log(f"warning: MLflow logging failed ({str(exc).splitlines()[0]}); the run folder {out_dir} is complete")
        return
    log("logged the run to MLflow")
