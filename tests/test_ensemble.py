"""`--ensemble tfidf`: the TF-IDF model's storage, the weight and the on/off rule, mixing in
Classifier (every backend), training and evaluate reports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _model_support import tiny_train_config

from ticket_triage import ensemble as ens
from ticket_triage.data.io import load_splits
from ticket_triage.errors import ModelError
from ticket_triage.inference.classifier import softmax
from ticket_triage.training import TrainConfig, train_model

TEXTS = [
    "my credit report shows a debt i do not owe",
    "the debt collector called about my mortgage payment",
    "bank charge on checking",
    "student loan interest",
    "card late fee",
]


def quiet(*_args, **_kwargs):
    pass


# -- the weight and the rule, on handmade probabilities ----------------------------------------
def test_weight_is_picked_by_validation_macro_f1_and_the_mix_beats_both():
    y = np.array([0, 1, 0, 1])
    # The transformer gets rows 0-1 right and 2-3 wrong; TF-IDF the other way round, less sure.
    p_t = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.6, 0.4]])
    p_f = np.array([[0.45, 0.55], [0.55, 0.45], [0.9, 0.1], [0.1, 0.9]])
    weight, grid = ens.choose_weight(p_t, p_f, y, 2)
    # Row 2 needs w > 0.2, row 0 needs w < 0.889: only there are all four right.
    assert 0.2 < weight < 0.889
    f1 = {r["weight"]: r["macro_f1"] for r in grid}
    assert f1[0.0] == 0.5 and f1[1.0] == 0.5 and f1[weight] == 1.0  # each alone: half right
    assert [r["weight"] for r in grid] == list(ens.WEIGHT_GRID)
    np.testing.assert_allclose(ens.mix(p_t, p_f, 0.25), 0.75 * p_t + 0.25 * p_f)
    assert (
        ens.ensemble_meta(weight, {"transformer": f1[0.0], "tfidf": f1[1.0], "hybrid": f1[weight]})["enabled"] is True
    )


def test_useless_tfidf_gets_weight_zero_and_stays_off():
    y = np.array([0, 1, 0, 1])
    p_t = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])  # all right
    p_f = 1 - p_t  # all wrong
    weight, grid = ens.choose_weight(p_t, p_f, y, 2)
    assert weight == 0.0, "ties on macro-F1 go to the lower log-loss: no TF-IDF at all"
    meta = ens.ensemble_meta(weight, {"transformer": 1.0, "tfidf": 0.0, "hybrid": 1.0})
    assert meta["enabled"] is False and meta["kind"] == "tfidf" and meta["file"] == ens.TFIDF_FILE


@pytest.mark.parametrize(
    "f1, enabled",
    [
        ({"transformer": 0.7, "tfidf": 0.6, "hybrid": 0.72}, True),
        ({"transformer": 0.7, "tfidf": 0.6, "hybrid": 0.7}, False),
        ({"transformer": 0.6, "tfidf": 0.75, "hybrid": 0.74}, False),
    ],
)
def test_enabled_only_when_hybrid_beats_both(f1, enabled):
    assert ens.should_enable(f1) is enabled


# -- storage: no pickle, exact probabilities after loading -------------------------------------
def test_saved_tfidf_model_reproduces_the_fitted_probabilities(small_prepared, tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    splits, labels = load_splits(small_prepared)
    train, val, test = splits["train"], splits["val"], splits["test"]
    model, report = ens.fit_tfidf(train.texts, train.labels, val.texts, val.labels, labels, c_grid=(1.0, 8.0))
    assert report["C"] in (1.0, 8.0) and len(report["c_grid"]) == 2 and model.temperature > 0
    files = model.save(tmp_path)
    assert sorted(files) == sorted(p.name for p in tmp_path.iterdir())
    loaded = ens.TfidfModel.load(tmp_path)
    assert np.array_equal(loaded.predict_proba(test.texts), model.predict_proba(test.texts))

    # The rebuilt vectorizer + matrix product is scikit-learn's own pipeline with those weights.
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=ens.MAX_FEATURES).fit(
        train.texts
    )
    assert vec.get_feature_names_out().tolist() == loaded.vocabulary
    lr = LogisticRegression()
    lr.coef_, lr.intercept_, lr.classes_ = loaded.coef, loaded.intercept, np.arange(len(labels))
    np.testing.assert_allclose(
        softmax(loaded.scores(test.texts)), lr.predict_proba(vec.transform(test.texts)), rtol=0, atol=1e-12
    )


# -- a training run with --ensemble tfidf ------------------------------------------------------
@pytest.fixture(scope="module")
def ensemble_run(tiny_model_dir, small_prepared, tmp_path_factory):
    config = tiny_train_config(tiny_model_dir, max_length=32, calibrate=True, ensemble="tfidf")
    out = tmp_path_factory.mktemp("ens") / "run"
    train_model(config, small_prepared, out, log=quiet, progress=False)
    return out


def test_training_stores_the_tfidf_model_and_a_weight_fitted_on_validation(ensemble_run, small_prepared):
    from ticket_triage import Classifier

    model_dir = ensemble_run / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert {ens.TFIDF_FILE, ens.TFIDF_WEIGHTS_FILE} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib", ".bin", ".pt"))]
    assert not [n for n in names if (model_dir / n).read_bytes()[:1] == b"\x80"], "no pickle streams under any name"
    spec = json.loads((model_dir / "triage.json").read_text())["ensemble"]
    assert spec["kind"] == "tfidf" and spec["file"] == ens.TFIDF_FILE and spec["weight"] in ens.WEIGHT_GRID
    assert set(spec["val_macro_f1"]) == {"transformer", "tfidf", "hybrid"}
    assert spec["enabled"] is ens.should_enable(spec["val_macro_f1"])

    # Refit the weight from the stored parts on validation: the same one comes out.
    splits, labels = load_splits(small_prepared)
    val = splits["val"]
    parts = Classifier.load(model_dir, ensemble=True).predict_proba_parts(val.texts)
    weight, _ = ens.choose_weight(parts["transformer"], parts["tfidf"], val.labels, len(labels))
    assert weight == spec["weight"]

    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        scores = metrics["ensemble"]["scores"][split]
        assert set(scores) == {"transformer", "tfidf", "hybrid"}
        assert set(scores["hybrid"]["recall"]) == set(labels)
    assert metrics["ensemble"]["scores"]["validation"]["hybrid"]["macro_f1"] == pytest.approx(
        spec["val_macro_f1"]["hybrid"]
    )
    shipped = "hybrid" if spec["enabled"] else "transformer"
    assert metrics["test"]["macro_f1"] == pytest.approx(metrics["ensemble"]["scores"]["test"][shipped]["macro_f1"])
    report = (ensemble_run / "classification_report.md").read_text()
    assert "Ensemble: transformer + TF-IDF" in report and "| hybrid |" in report


def _with_ensemble(src, dest, enabled: bool, weight: float = 0.3):
    shutil.copytree(src, dest)
    meta = json.loads((dest / "triage.json").read_text())
    meta["ensemble"].update(enabled=enabled, weight=weight)
    (dest / "triage.json").write_text(json.dumps(meta))
    return dest


def test_classifier_mixes_exactly_when_enabled_and_not_when_disabled(ensemble_run, tmp_path):
    from ticket_triage import Classifier

    on = _with_ensemble(ensemble_run / "model", tmp_path / "on", True)
    off = _with_ensemble(ensemble_run / "model", tmp_path / "off", False)
    clf = Classifier.load(on, backend="torch")
    assert clf.ensemble_enabled and clf.model_version.endswith("-torch+tfidf")
    p_t = softmax(clf.predict_logits(TEXTS), clf.temperature)
    p_f = ens.TfidfModel.load(on).predict_proba(TEXTS)
    np.testing.assert_allclose(clf.predict_proba(TEXTS), 0.7 * p_t + 0.3 * p_f, rtol=0, atol=1e-12)
    assert [p.category for p in clf.predict(TEXTS)] == [clf.labels[i] for i in (0.7 * p_t + 0.3 * p_f).argmax(1)]

    disabled = Classifier.load(off, backend="torch")
    assert not disabled.ensemble_enabled and disabled.tfidf is not None and "+tfidf" not in disabled.model_version
    np.testing.assert_allclose(disabled.predict_proba(TEXTS), p_t, rtol=0, atol=1e-12)
    forced = Classifier.load(off, backend="torch", ensemble=True)
    np.testing.assert_allclose(forced.predict_proba(TEXTS), 0.7 * p_t + 0.3 * p_f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        Classifier.load(on, backend="torch", ensemble=False).predict_proba(TEXTS), p_t, rtol=0, atol=1e-12
    )


def test_enabled_ensemble_with_missing_files_says_what_to_do(ensemble_run, tmp_path):
    from ticket_triage import Classifier

    on = _with_ensemble(ensemble_run / "model", tmp_path / "on", True)
    (on / ens.TFIDF_WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="ensemble=False"):
        Classifier.load(on, backend="torch")
    assert not Classifier.load(on, backend="torch", ensemble=False).ensemble_enabled


def test_evaluate_reports_transformer_tfidf_and_hybrid(ensemble_run, small_prepared, tmp_path):
    from ticket_triage.evaluation.evaluate import evaluate_model

    metrics = evaluate_model(ensemble_run / "model", small_prepared / "test.parquet", tmp_path / "eval", batch_size=16)
    scores = metrics["ensemble"]["scores"]["test.parquet"]
    trained = json.loads((ensemble_run / "metrics.json").read_text())
    assert set(scores) == {"transformer", "tfidf", "hybrid"}
    for name in scores:  # the same model folder on the same rows as training's test report
        assert scores[name]["macro_f1"] == pytest.approx(trained["ensemble"]["scores"]["test"][name]["macro_f1"])
    assert metrics["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert "| tfidf |" in (tmp_path / "eval" / "classification_report.md").read_text()


def test_onnx_export_carries_the_tfidf_model(ensemble_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx

    on = _with_ensemble(ensemble_run / "model", tmp_path / "on", True)
    export_onnx(on, tmp_path / "onnx", quantize="int8")
    assert {ens.TFIDF_FILE, ens.TFIDF_WEIGHTS_FILE} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    torch_clf = Classifier.load(on, backend="torch")
    for backend in ("onnx-fp32", "onnx-int8"):
        onnx_clf = Classifier.load(tmp_path / "onnx", backend=backend)
        assert onnx_clf.ensemble_enabled and onnx_clf.model_version.endswith("+tfidf")
        p_t = softmax(onnx_clf.predict_logits(TEXTS), onnx_clf.temperature)
        np.testing.assert_allclose(
            onnx_clf.predict_proba(TEXTS), 0.7 * p_t + 0.3 * onnx_clf.tfidf.predict_proba(TEXTS), atol=1e-12
        )
    np.testing.assert_allclose(
        Classifier.load(tmp_path / "onnx", backend="onnx-fp32").predict_proba(TEXTS),
        torch_clf.predict_proba(TEXTS),
        atol=1e-4,
    )


def test_ensemble_true_on_a_folder_without_one_is_an_error(tmp_path, tiny_model_dir):
    from _model_support import make_model_folder

    from ticket_triage import Classifier

    folder = make_model_folder(tmp_path / "plain", tiny_model_dir)
    with pytest.raises(ModelError, match="without --ensemble tfidf"):
        Classifier.load(folder, backend="torch", ensemble=True)
    assert Classifier.load(folder, backend="torch").tfidf is None


def test_predict_and_serve_can_switch_an_enabled_hybrid_off(ensemble_run, tmp_path, capsys, monkeypatch):
    """`triage predict --no-ensemble` / `triage serve --no-ensemble` (TRIAGE_ENSEMBLE=false): the transformer alone."""
    import pandas as pd
    from _model_support import cli_ok

    from ticket_triage import Classifier
    from ticket_triage.service import app as service_app
    from ticket_triage.service.classifier import load_classifier
    from ticket_triage.service.settings import Settings

    on = _with_ensemble(ensemble_run / "model", tmp_path / "on", True)
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    transformer = Classifier.load(on, backend="torch", ensemble=False)
    p_alone = transformer.predict_proba(TEXTS)
    p_hybrid = Classifier.load(on, backend="torch").predict_proba(TEXTS)
    assert np.abs(p_alone - p_hybrid).max() > 1e-3  # the switch must be visible in the output
    for flag, expected in (([], p_hybrid), (["--no-ensemble"], p_alone)):
        out = tmp_path / f"out{len(flag)}.parquet"
        cli_ok(
            [
                "predict",
                "--model",
                str(on),
                "--input",
                str(tmp_path / "in.csv"),
                "--out",
                str(out),
                "--backend",
                "torch",
                *flag,
            ]
        )
        scored = pd.read_parquet(out)
        np.testing.assert_allclose(scored[[f"prob_{c}" for c in transformer.labels]].to_numpy(), expected, atol=1e-6)
    capsys.readouterr()

    assert not load_classifier(on, "torch", "cpu", False).ensemble_enabled
    assert load_classifier(on, "torch", "cpu").ensemble_enabled
    monkeypatch.setenv("TRIAGE_ENSEMBLE", "false")
    assert Settings().ensemble is False
    seen = []

    def recording_loader(*args):
        seen.append(args)
        raise RuntimeError("recorded")

    monkeypatch.setattr(service_app, "load_classifier", recording_loader)
    with pytest.raises(RuntimeError, match="recorded"):
        service_app.create_app(Settings(model_dir=on))
    assert seen[0][-1] is False


def test_calibrate_chooses_the_hybrid_weight_again_at_the_new_temperature(ensemble_run, small_prepared, tmp_path):
    from ticket_triage import Classifier
    from ticket_triage.calibration import calibrate_model

    folder = _with_ensemble(ensemble_run / "model", tmp_path / "m", False, weight=0.95)  # a stale weight, switched off
    report = calibrate_model(folder, small_prepared / "val.parquet", tmp_path / "cal")
    splits, labels = load_splits(small_prepared)
    clf = Classifier.load(folder, backend="torch", ensemble=False)
    p_t = softmax(clf.predict_logits(splits["val"].texts), report.temperature)
    p_f = ens.TfidfModel.load(folder).predict_proba(splits["val"].texts)
    expected, _ = ens.choose_weight(p_t, p_f, splits["val"].labels, len(labels))
    meta = json.loads((folder / "triage.json").read_text())
    assert report.ensemble["previous_weight"] == 0.95 and report.ensemble["weight"] == pytest.approx(expected)
    assert meta["ensemble"]["weight"] == pytest.approx(expected) and meta["temperature"] == pytest.approx(
        report.temperature
    )
    assert meta["ensemble"]["enabled"] == ens.should_enable(report.ensemble["val_macro_f1"])
    assert (
        meta["ensemble"]["C"] == json.loads((ensemble_run / "model" / "triage.json").read_text())["ensemble"]["C"]
    )  # the fit's facts kept
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["ensemble"]["weight"] == pytest.approx(
        expected
    )


def test_calibrate_leaves_a_folder_without_a_hybrid_alone(tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.calibration import calibrate_model

    config = tiny_train_config(tiny_model_dir, max_length=32)
    run = train_model(config, small_prepared, tmp_path / "run", log=quiet, progress=False)
    report = calibrate_model(run.model_dir, small_prepared / "val.parquet")
    assert report.ensemble is None and json.loads((run.model_dir / "triage.json").read_text())["ensemble"] is None


def test_the_end_of_a_hybrid_run_scores_each_split_once(tiny_model_dir, small_prepared, tmp_path, monkeypatch):
    """Calibration and the hybrid's fit read the same validation logits: the shipped folder is
    loaded once and scores validation and test once each (it used to score validation twice)."""
    from ticket_triage import Classifier

    loads, scored = [], []
    real_load, real_logits = Classifier.load.__func__, Classifier.predict_logits
    monkeypatch.setattr(
        Classifier, "load", classmethod(lambda cls, *a, **k: loads.append(a[0]) or real_load(cls, *a, **k))
    )
    monkeypatch.setattr(
        Classifier,
        "predict_logits",
        lambda self, texts, *a, **k: scored.append((self.folder, len(texts))) or real_logits(self, texts, *a, **k),
    )
    config = TrainConfig(
        model=str(tiny_model_dir),
        epochs=1,
        max_length=32,
        lr=1e-3,
        seed=7,
        precision="fp32",
        threads=1,
        baseline=False,
        ensemble="tfidf",
    )
    result = train_model(config, small_prepared, tmp_path / "run", log=quiet, progress=False)
    assert loads == [result.model_dir]
    assert [n for folder, n in scored if folder is not None] == [60, 60], "validation and test, once each"
    assert [n for folder, n in scored if folder is None] == [60], "the epoch's validation, on the model in memory"
    assert json.loads((tmp_path / "run" / "calibration.json").read_text())["n"] == 60
