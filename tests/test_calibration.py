"""Temperature scaling, calibration error, coverage, and calibrate_model on a model folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _model_support import make_model_folder

from ticket_triage.calibration import (
    calibrate_model,
    coverage_curve,
    coverage_plot,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)
from ticket_triage.errors import DataError
from ticket_triage.inference import softmax


def synthetic(n=4000, k=4, scale=3.0, seed=0):
    """Labels drawn from softmax(z) (so z is calibrated), logits = scale * z (over-confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    p = softmax(z)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z * scale, y


def test_temperature_fitting_lowers_ece_on_overconfident_logits():
    logits, y = synthetic(scale=3.0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits, t), y)
    assert before > 0.1 and after < 0.03 and after < before / 4
    # Under-confident logits get T < 1.
    assert fit_temperature(logits / 6.0, y) == pytest.approx(0.5, rel=0.1)


def test_ece_and_coverage_by_hand():
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)
    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    rows = coverage_curve(probs, np.array([0, 1, 1, 0]), [0.0, 0.58, 0.9, 0.99])
    assert rows[0] == {"threshold": 0.0, "auto_routed_share": 1.0, "accuracy_on_routed": 0.75}
    assert rows[1] == {"threshold": 0.58, "auto_routed_share": 0.75, "accuracy_on_routed": pytest.approx(2 / 3)}
    assert rows[2]["auto_routed_share"] == 0.25 and rows[2]["accuracy_on_routed"] == 1.0
    assert rows[3] == {"threshold": 0.99, "auto_routed_share": 0.0, "accuracy_on_routed": None}
    with pytest.raises(DataError):
        expected_calibration_error(probs, np.array([0, 1]))
    with pytest.raises(DataError):
        fit_temperature(probs, np.array([0, 1, 2, 0]))


def test_plots_are_figures():
    from matplotlib.figure import Figure

    logits, y = synthetic(500)
    assert isinstance(reliability_diagram(softmax(logits), y), Figure)
    assert isinstance(coverage_plot(softmax(logits), y), Figure)


def test_calibrate_model_writes_temperature_and_reports(tmp_path, tiny_model_dir, capsys):
    from _model_support import cli_ok

    from ticket_triage import Classifier

    model_dir = make_model_folder(tmp_path / "model", tiny_model_dir)
    clf = Classifier.load(model_dir)
    words = "credit report debt collector mortgage loan payment escrow card charge fee bank checking savings".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 30)))) for _ in range(120)]
    # Labels: the model's prediction 60% of the time, else random: the raw model is over-confident or not,
    # either way the fitted T must not make NLL worse.
    preds = [p.category for p in clf.predict(texts)]
    labels = [p if rng.random() < 0.6 else rng.choice(clf.labels) for p in preds]
    val = tmp_path / "val.parquet"
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(val)

    report = calibrate_model(model_dir, val)
    assert report.n == 120 and report.nll_after <= report.nll_before + 1e-9
    assert json.loads((model_dir / "triage.json").read_text())["temperature"] == pytest.approx(report.temperature)
    saved = json.loads((model_dir / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(report.temperature) and saved["ece_before"] == pytest.approx(
        report.ece_before
    )
    assert (model_dir / "reliability_diagram.png").stat().st_size > 1000 and (model_dir / "coverage.png").is_file()
    reloaded = Classifier.load(model_dir)
    assert reloaded.temperature == pytest.approx(report.temperature)
    np.testing.assert_allclose(
        reloaded.predict_proba(texts[:5]), softmax(clf.predict_logits(texts[:5]), report.temperature), atol=1e-6
    )

    cli_ok(["calibrate", "--model", str(model_dir), "--data", str(val), "--out", str(tmp_path / "cal")])
    assert "temperature" in capsys.readouterr().out and (tmp_path / "cal" / "calibration.json").is_file()
