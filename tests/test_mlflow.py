"""Optional MLflow logging, against a local file store."""

from __future__ import annotations

import pytest

from ticket_triage.training import TrainConfig, train_model

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


def test_params_metrics_and_artefacts_logged(tiny_model_dir, small_prepared, tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    config = TrainConfig(
        model=str(tiny_model_dir),
        epochs=2,
        batch_size=16,
        max_length=32,
        precision="fp32",
        threads=1,
        baseline=False,
        calibrate=False,
    )
    train_model(config, small_prepared, tmp_path / "run", log=lambda *_: None)

    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    runs = client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["epochs"] == "2" and run.data.params["max_length"] == "32"
    assert "test_macro_f1" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert [m.step for m in history] == [1, 2]
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "classification_report.md", "confusion_matrix.png", "loss_curves.png"} <= artefacts
