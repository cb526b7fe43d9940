"""`triage compare`: paired bootstrap, metrics matching evaluation's, the verdict rules, the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _model_support import cli_error, make_model_folder

from ticket_triage.errors import ConfigError
from ticket_triage.learning.compare import (
    CompareConfig,
    Scored,
    compare_models,
    paired_bootstrap,
    resample_metrics,
)
from ticket_triage.learning.verdict import load_rules, verdict

LABELS = ["a", "b", "c"]


class Routing:
    """Review below 0.5, else the category's own queue (the service's rule, without a file)."""

    def route(self, category, confidence):
        from ticket_triage.service.routing import RoutingDecision

        return RoutingDecision("review" if confidence < 0.5 else category, confidence < 0.5)


def scored(rng, y, accuracy):
    pred = np.where(rng.random(len(y)) < accuracy, y, (y + 1) % 3)
    conf = rng.uniform(0.3, 1.0, len(y))
    return Scored(pred, conf, conf < 0.5)


def test_point_estimates_match_evaluation_and_calibration():
    from ticket_triage.calibration import expected_calibration_error
    from ticket_triage.evaluation.metrics import classification_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200)
    s = Scored.from_proba(probs, LABELS, Routing())
    m = resample_metrics(y, s, np.arange(200)[None, :], 3, 15)
    ref = classification_metrics(y, probs.argmax(1), LABELS)
    assert m["macro_f1"][0] == pytest.approx(ref["macro_f1"])
    assert m["accuracy"][0] == pytest.approx(ref["accuracy"])
    assert m["recall"][0] == pytest.approx([ref["per_class"][c]["recall"] for c in LABELS])
    assert m["ece"][0] == pytest.approx(expected_calibration_error(probs, y))
    assert m["review_rate"][0] == pytest.approx((probs.max(1) < 0.5).mean())


def test_paired_bootstrap_intervals_contain_the_estimate_and_are_paired():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    a, b = scored(rng, y, 0.7), scored(rng, y, 0.8)
    out = paired_bootstrap(y, a, b, 3, CompareConfig(resamples=500, seed=3))
    for key in ("macro_f1", "accuracy", "ece", "review_rate"):
        e = out[key]
        assert e["champion_ci"][0] <= e["champion"] <= e["champion_ci"][1], key
        assert e["challenger_ci"][0] <= e["challenger"] <= e["challenger_ci"][1], key
        assert e["delta_ci"][0] <= e["delta"] <= e["delta_ci"][1], key
    # paired: the same model as both sides differs by exactly 0 on every resample
    same = paired_bootstrap(y, a, a, 3, CompareConfig(resamples=200, seed=3))
    assert same["macro_f1"]["delta_ci"] == [0.0, 0.0]
    # and the pairing narrows the difference's interval: b is a with 5% of rows changed
    pred = a.pred.copy()
    flip = rng.random(len(y)) < 0.05
    pred[flip] = y[flip]
    close = Scored(pred, a.confidence, a.review)
    paired = paired_bootstrap(y, a, close, 3, CompareConfig(resamples=500, seed=4))["accuracy"]
    paired_width = paired["delta_ci"][1] - paired["delta_ci"][0]
    unpaired_width = np.hypot(*(np.diff(paired[k])[0] for k in ("champion_ci", "challenger_ci")))
    assert paired_width < unpaired_width / 2
    # seeded: the same intervals again
    assert paired_bootstrap(y, a, b, 3, CompareConfig(resamples=500, seed=3)) == out


def _sets(champion, challenger, support=50, recall=None):
    recall = recall or {}
    return {
        "metrics": {
            "macro_f1": {"champion": champion, "challenger": challenger},
            "accuracy": {"champion": champion, "challenger": challenger},
            "ece": {"champion": 0.05, "challenger": 0.05},
            "review_rate": {"champion": 0.1, "challenger": 0.1},
            # (champion, challenger[, interval of the difference]); no interval: a zero-width one
            "recall": {
                c: {"champion": r[0], "challenger": r[1], "delta_ci": list(r[2]) if len(r) > 2 else [r[1] - r[0]] * 2}
                for c, r in recall.items()
            },
        },
        "support": {c: support for c in recall},
    }


def test_default_rules_pass_a_better_challenger_and_fail_a_worse_one():
    rules = load_rules()
    good = {"base_test": _sets(0.80, 0.798, recall={"a": (0.8, 0.79)}), "corrections": _sets(0.2, 0.6)}
    assert verdict(good, rules)["passed"]
    # 0.6 points lower on the base test: over the 0.5 allowed
    worse = {**good, "base_test": _sets(0.80, 0.794, recall={"a": (0.8, 0.8)})}
    v = verdict(worse, rules)
    assert not v["passed"]
    assert [c["set"] for c in v["checks"] if not c["passed"]] == ["base_test"]
    # one category's recall 3 points lower fails; on a category with few rows it is not judged
    recall_drop = {**good, "base_test": _sets(0.8, 0.8, recall={"a": (0.8, 0.77)})}
    assert not verdict(recall_drop, rules)["passed"]
    few = {**good, "base_test": _sets(0.8, 0.8, support=5, recall={"a": (0.8, 0.4)})}
    assert verdict(few, rules)["passed"]
    # not higher on the corrections, or no corrections set at all: fails
    assert not verdict({**good, "corrections": _sets(0.5, 0.5)}, rules)["passed"]
    missing = verdict({"base_test": good["base_test"]}, rules)
    assert not missing["passed"] and any(c["detail"] == "set not evaluated" for c in missing["checks"])


def test_recall_is_judged_on_its_interval_a_drop_must_be_shown(tmp_path):
    rules = load_rules()  # the shipped recall rule judges the interval
    corrections = _sets(0.2, 0.6)
    noisy = {"base_test": _sets(0.8, 0.8, recall={"a": (0.8, 0.77, (-0.08, 0.02))}), "corrections": corrections}
    assert verdict(noisy, rules)["passed"]  # 3 points lower, but a gain of +2 is as likely: not shown
    shown = {"base_test": _sets(0.8, 0.8, recall={"a": (0.8, 0.77, (-0.05, -0.025))}), "corrections": corrections}
    v = verdict(shown, rules)
    assert not v["passed"] and "interval -5.00 to -2.50" in next(c["detail"] for c in v["checks"] if not c["passed"])
    path = tmp_path / "point.yaml"  # the same drop judged on the point estimates fails
    path.write_text("rules:\n  - metric: recall\n    max_drop_points: 2\n    judge: point\n")
    assert not verdict(noisy, load_rules(path))["passed"]
    path.write_text("rules:\n  - metric: macro_f1\n    must_improve: true\n    judge: interval\n")
    unsure = {"corrections": _sets(0.2, 0.6)}
    unsure["corrections"]["metrics"]["macro_f1"]["delta_ci"] = [-0.01, 0.7]
    assert not verdict(unsure, load_rules(path))["passed"]  # better on average, not shown to be
    path.write_text("rules:\n  - metric: recall\n    max_drop_points: 2\n    judge: median\n")
    with pytest.raises(ConfigError, match="judge must be one of point, interval"):
        load_rules(path)


def test_lower_is_better_metrics_and_bad_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - metric: ece\n    sets: all\n    max_drop_points: 1\n")
    rules = load_rules(path)
    s = _sets(0.8, 0.8)
    s["metrics"]["ece"] = {"champion": 0.05, "challenger": 0.07}  # 2 points worse calibrated
    assert not verdict({"x": s}, rules)["passed"]
    s["metrics"]["ece"] = {"champion": 0.07, "challenger": 0.03}
    assert verdict({"x": s}, rules)["passed"]
    for text, message in (
        ("rules:\n  - metric: f2\n    max_drop_points: 1\n", "metric must be one of"),
        ("rules:\n  - metric: ece\n", "exactly one of"),
        ("rules: [", "not valid YAML"),
        ("rules:\n  - metric: ece\n    max_drop_points: 1\n    colour: red\n", "unknown key"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_rules(path)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_model_dir):
    import torch

    from ticket_triage.modeling import load_model_folder, save_model_folder

    root = tmp_path_factory.mktemp("models")
    champion = make_model_folder(root / "champion", tiny_model_dir)
    model, tokenizer, meta = load_model_folder(champion)[:3]
    with torch.no_grad():
        model.classifier.bias.add_(torch.linspace(-3, 3, len(meta.labels)))  # another model
    challenger = save_model_folder(model, tokenizer, root / "challenger", meta)
    return champion, challenger


def test_compare_writes_report_changes_and_verdict(two_models, make_prepared, tmp_path):
    champion, challenger = two_models
    data = make_prepared(tmp_path / "prep", 12, 30)
    report = compare_models(
        champion,
        challenger,
        base_test=data / "test.parquet",
        data=[data / "val.parquet"],
        out_dir=tmp_path / "cmp",
        config=CompareConfig(resamples=100, batch_size=16),
    )
    assert set(report["sets"]) == {"base_test", "val"}
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["verdict"]["passed"] is False  # no corrections set: the default gate cannot pass
    assert "Champion vs challenger" in (tmp_path / "cmp" / "compare.md").read_text()
    import pandas as pd

    changes = pd.read_csv(tmp_path / "cmp" / "routing_changes.csv")
    assert len(changes) == report["routing_changes"]["count"] > 0
    assert (changes["champion_queue"] != changes["challenger_queue"]).all()
    # the same model on both sides changes nothing and differs by 0
    same = compare_models(
        champion,
        champion,
        base_test=data / "test.parquet",
        out_dir=tmp_path / "same",
        config=CompareConfig(resamples=50),
    )
    assert same["routing_changes"]["count"] == 0
    assert same["sets"]["base_test"]["metrics"]["macro_f1"]["delta_ci"] == [0.0, 0.0]


def test_compare_cli(two_models, make_prepared, tmp_path, capsys):
    champion, challenger = two_models
    data = make_prepared(tmp_path / "prep", 12, 20)
    out = tmp_path / "cli"
    from ticket_triage.cli import main

    with pytest.raises(SystemExit) as exit_:  # the gate failed (no corrections set): exit 2, not 1 (bad input)
        main(
            [
                "compare",
                "--champion",
                str(champion),
                "--challenger",
                str(challenger),
                "--base-test",
                str(data / "test.parquet"),
                "--threshold",
                "0.9",
                "--resamples",
                "50",
                "--out",
                str(out),
            ]
        )
    assert exit_.value.code == 2
    report = json.loads((out / "compare.json").read_text())
    assert report["routing"]["threshold"] == 0.9
    assert "macro_f1" in capsys.readouterr().out
    err = cli_error(
        capsys, ["compare", "--champion", str(champion), "--challenger", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert "nope" in err
