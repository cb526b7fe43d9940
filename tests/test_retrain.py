"""`triage retrain`: merging corrections over the base rows, the time split, weights reaching the
loss, and the run it writes; on a tiny random BERT and small real data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _model_support import make_model_folder, tiny_train_config

from ticket_triage.errors import ConfigError, DataError

LABELS = ["Credit Reporting", "Debt Collection", "Mortgage", "Card Services", "Loans", "Banking Services"]
TINY = dict(precision="fp32", threads=1, max_length=48, calibrate=False, baseline=False, batch_size=16, seed=7)


def quiet(*_args, **_kwargs):
    pass


def corrections_frame(rows):
    """rows: (ticket_id, text, label, corrected_at ISO)."""
    frame = pd.DataFrame(rows, columns=["ticket_id", "text", "label", "corrected_at"])
    frame["corrected_at"] = pd.to_datetime(frame["corrected_at"], utc=True)
    return frame


def export_csv(path, rows):
    """The CSV of GET /v1/feedback/export (service/routes/feedback.py EXPORT_COLUMNS)."""
    pd.DataFrame(
        [
            {
                "Date received": when,
                "Product": label,
                "Consumer complaint narrative": text,
                "Complaint ID": ticket,
                "Submitted via": "web",
            }
            for ticket, text, label, when in rows
        ]
    ).to_csv(path, index=False)
    return path


# -- weights reach the loss ---------------------------------------------------------------------
def test_weighted_cross_entropy_is_torchs_with_unit_weights_and_ignores_zero_weight_rows():
    import torch

    from ticket_triage.training.data import weighted_cross_entropy

    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    class_w = torch.tensor([1.0, 2.0, 0.5])
    plain = torch.nn.CrossEntropyLoss(weight=class_w)(logits, targets)
    assert torch.allclose(weighted_cross_entropy(logits, targets, torch.ones(4), class_w), plain)
    # a row of weight 0 does not count; a row of weight 3 counts as three copies of it
    only_first = weighted_cross_entropy(logits, targets, torch.tensor([1.0, 0.0, 0.0, 0.0]), None, mean_weight=0.25)
    assert torch.allclose(only_first, torch.nn.functional.cross_entropy(logits[:1], targets[:1]))
    tripled = weighted_cross_entropy(logits, targets, torch.tensor([3.0, 1, 1, 1]), None, mean_weight=1.0)
    copies = torch.nn.functional.cross_entropy(logits[[0, 0, 0, 1, 2, 3]], targets[[0, 0, 0, 1, 2, 3]]) * 6 / 4
    assert torch.allclose(tripled, copies)


def _with_weights(src, dest, weights):
    import shutil

    shutil.copytree(src, dest)
    frame = pd.read_parquet(dest / "train.parquet")
    frame["weight"] = weights(len(frame))
    frame.to_parquet(dest / "train.parquet")
    return dest


def test_weight_column_changes_training_and_unit_weights_do_not(tiny_model_dir, make_prepared, tmp_path):
    """Fails if the `weight` column is ignored: the weighted run must learn other weights."""
    from safetensors.numpy import load_file

    from ticket_triage.training import train_model

    base = make_prepared(tmp_path / "base", 64, 12)
    ones = _with_weights(base, tmp_path / "ones", lambda n: np.ones(n))
    heavy = _with_weights(base, tmp_path / "heavy", lambda n: np.where(np.arange(n) % 2 == 0, 5.0, 0.0))
    cfg = tiny_train_config(tiny_model_dir, epochs=1)

    def trained(data, name):
        train_model(cfg, data, tmp_path / name, log=quiet, progress=False)
        return load_file(str(tmp_path / name / "model" / "model.safetensors"))

    plain, unit, weighted = trained(base, "plain"), trained(ones, "unit"), trained(heavy, "heavy")
    key = next(k for k in plain if "classifier.weight" in k)
    np.testing.assert_array_equal(plain[key], unit[key])  # weight 1 everywhere is the plain loss
    assert not np.allclose(plain[key], weighted[key])


def test_bad_weights_are_a_clear_error(make_prepared, tmp_path):
    from ticket_triage.data.io import load_splits

    bad = _with_weights(make_prepared(tmp_path / "b", 12, 6), tmp_path / "bad", lambda n: -np.ones(n))
    with pytest.raises(DataError, match="weight column"):
        load_splits(bad)


# -- merging and the time split -----------------------------------------------------------------
def _base(make_prepared, tmp_path, n=60):
    folder = make_prepared(tmp_path / "base", n, 12)
    return folder, pd.read_parquet(folder / "train.parquet")[["text", "label"]]


def test_agents_labels_take_precedence_over_base_rows_and_older_corrections(make_prepared, tmp_path):
    from ticket_triage.learning.merge import merge_rows

    _, base = _base(make_prepared, tmp_path)
    first, second = base.iloc[0], base.iloc[1]
    other = next(c for c in LABELS if c != first["label"])
    newer = next(c for c in LABELS if c not in (first["label"], other))
    corrections = corrections_frame(
        [
            # a near-copy of base row 0 (one word changed, different spacing) with the agent's label
            ("t1", first["text"].replace(" the ", " a ", 1) + "  ", other, "2026-01-01"),
            # another ticket, the same text, corrected later to another category: the newest wins
            ("t2", first["text"], newer, "2026-02-01"),
            ("t3", second["text"], second["label"], "2026-01-15"),  # agrees with its base row
        ]
    )
    merged = merge_rows(base, corrections, correction_weight=3.0, threshold=0.7)
    train = merged.train
    group = train[train["text"].str.contains(first["text"][:60], regex=False)]
    assert group["label"].tolist() == [newer] and group["weight"].tolist() == [3.0]
    assert group["origin"].tolist() == ["correction"]
    assert (train["text"] == second["text"]).sum() == 1  # the correction replaced the base copy
    assert merged.counts["base_rows_relabelled_or_replaced"] == 2
    assert merged.counts["corrections_superseded"] == 1
    assert merged.counts["train_rows"] == len(base) - 2 + 2
    assert set(train.loc[train["origin"] == "base", "weight"]) == {1.0}


def test_rows_echoing_evaluation_texts_are_dropped(make_prepared, tmp_path):
    from ticket_triage.learning.merge import merge_rows

    _, base = _base(make_prepared, tmp_path)
    corrections = corrections_frame([("t1", base.iloc[3]["text"], LABELS[0], "2026-01-01")])
    merged = merge_rows(base, corrections, correction_weight=2, threshold=0.7, exclude_texts=[base.iloc[3]["text"]])
    assert base.iloc[3]["text"] not in set(merged.train["text"])
    assert merged.counts["dropped_as_near_duplicates_of_evaluation_rows"] == 1


def test_time_split_holds_out_the_newest_corrections():
    from ticket_triage.learning.merge import time_split

    days = [f"2026-03-{d:02d}" for d in (5, 1, 9, 3, 7, 2, 10, 4, 8, 6)]  # shuffled
    frame = corrections_frame([(f"t{i}", f"text {i}", LABELS[0], day) for i, day in enumerate(days)])
    train, held = time_split(frame, 0.2)
    assert len(held) == 2 and len(train) == 8
    assert held["corrected_at"].min() > train["corrected_at"].max()
    assert sorted(held["corrected_at"].dt.day) == [9, 10]
    assert len(time_split(frame, 0.0)[1]) == 0


# -- reading corrections ------------------------------------------------------------------------
def test_corrections_from_the_export_csv(tmp_path):
    from ticket_triage.learning.feedback import read_corrections

    path = export_csv(
        tmp_path / "fb.csv",
        [
            ("1", "'=cmd|' my loan was sold", "Loans", "2026-01-02"),  # formula-guarded by the export
            ("2", "my card was charged twice", "Card Services", "2026-01-03"),
            ("1", "'=cmd|' my loan was sold", "Mortgage", "2026-01-05"),  # the ticket corrected again
        ],
    )
    frame = read_corrections(path, labels=LABELS)
    assert frame.set_index("ticket_id")["label"].to_dict() == {"1": "Mortgage", "2": "Card Services"}
    assert frame.set_index("ticket_id").loc["1", "text"] == "=cmd|' my loan was sold"
    assert read_corrections(path, labels=LABELS, since=pd.Timestamp("2026-01-04").date())["ticket_id"].tolist() == ["1"]
    with pytest.raises(DataError, match="categories the model does not know"):
        read_corrections(path, labels=["Loans", "Mortgage"])
    with pytest.raises(DataError, match="does not exist"):
        read_corrections(tmp_path / "none.csv", labels=LABELS)


def test_corrections_from_the_service_database(tmp_path):
    from datetime import datetime, timezone

    from sqlalchemy.orm import Session

    from ticket_triage.learning.feedback import read_corrections
    from ticket_triage.service.db import make_engine, upgrade_database
    from ticket_triage.service.models import Feedback, Ticket

    url = f"sqlite:///{tmp_path / 'triage.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    at = lambda day: datetime(2026, 1, day, tzinfo=timezone.utc)  # noqa: E731
    with Session(engine) as session:
        t1 = Ticket(channel="web", subject="Loan", body="my loan was sold", status="corrected", queue="x")
        t2 = Ticket(channel="web", body="charged twice on my card", status="corrected", queue="x")
        t3 = Ticket(channel="web", body="never corrected", status="routed", queue="x")
        session.add_all([t1, t2, t3])
        session.flush()
        for ticket, category, day in ((t1, "Loans", 2), (t2, "Card Services", 3), (t1, "Mortgage", 5)):
            session.add(
                Feedback(
                    ticket_id=ticket.id,
                    agent="ann",
                    previous_queue="x",
                    category=category,
                    queue="q",
                    created_at=at(day),
                )
            )
        session.commit()
    engine.dispose()
    frame = read_corrections(url, labels=LABELS)
    assert dict(zip(frame["text"], frame["label"])) == {
        "Loan\n\nmy loan was sold": "Mortgage",
        "charged twice on my card": "Card Services",
    }
    assert frame["corrected_at"].is_monotonic_increasing
    assert len(read_corrections(url, labels=LABELS, since=at(4))) == 1


# -- the run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def current(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("current") / "model", tiny_model_dir)


def _live_corrections(make_prepared, tmp_path, n=20):
    """Corrections of texts the base has never seen (another sample of the bundled data)."""
    live = pd.read_parquet(make_prepared(tmp_path / "live", n, 1, seed=5) / "train.parquet")
    days = pd.date_range("2026-01-01", periods=n, freq="D")
    rows = [
        (str(100 + i), t, label, day.date().isoformat())
        for i, (t, label, day) in enumerate(zip(live["text"], live["label"], days))
    ]
    return export_csv(tmp_path / "feedback.csv", rows)


def test_retrain_writes_a_run_with_weighted_corrections_and_the_held_out_newest(current, make_prepared, tmp_path):
    from ticket_triage.learning.retrain import RetrainConfig, retrain

    base, _ = _base(make_prepared, tmp_path)
    feedback = _live_corrections(make_prepared, tmp_path)
    out = tmp_path / "run"
    result = retrain(
        RetrainConfig(base=base, model=current, feedback=str(feedback), out=out, train_overrides=TINY),
        log=quiet,
        progress=False,
    )
    assert (out / "model" / "triage.json").is_file() and (out / "metrics.json").is_file()
    summary = json.loads((out / "retrain.json").read_text())
    counts = summary["counts"]
    assert counts["corrections"] == 20 and counts["corrections_held_out"] == 4 and counts["corrections_train"] == 16
    assert summary["config"]["train"]["model"] == str(current) and summary["config"]["train"]["epochs"] == 1
    assert sum(summary["per_category"]["corrections_held_out"].values()) == 4
    train = pd.read_parquet(out / "data" / "train.parquet")
    assert set(train.loc[train["origin"] == "correction", "weight"]) == {3.0}
    held = pd.read_parquet(result.holdout)
    assert sorted(held["ticket_id"]) == ["116", "117", "118", "119"]  # the four newest
    assert not set(held["text"]) & set(train["text"])
    with pytest.raises(ConfigError, match="already holds a run"):
        retrain(RetrainConfig(base=base, model=current, feedback=str(feedback), out=out), log=quiet)


def test_retrain_refuses_a_model_of_other_categories(current, make_prepared, tmp_path):
    from ticket_triage.learning.retrain import RetrainConfig, retrain

    base, _ = _base(make_prepared, tmp_path)
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["labels"] = manifest["labels"][:-1] + ["Other"]
    (base / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="give the prepared folder the model was trained on"):
        retrain(RetrainConfig(base=base, model=current, feedback="x.csv", out=tmp_path / "r"), log=quiet)


# -- the gate decides -----------------------------------------------------------------------------
class FakeRegistry:
    """Contract A's calls, recorded: what --promote-if-better may do to a registry."""

    def __init__(self):
        self.registered, self.promoted = [], []

    def active(self):
        return None if not self.promoted else self.promoted[-1]

    def register(self, model_dir, *, comparison=None, note=""):
        from types import SimpleNamespace

        version = SimpleNamespace(version=f"v{len(self.registered) + 1}", path=model_dir, comparison=comparison)
        self.registered.append(version)
        return version

    def promote(self, version, *, by="cli"):
        found = next(v for v in self.registered if v.version == version)
        self.promoted.append(found)
        return found


def test_a_failing_challenger_is_not_promoted_and_a_passing_one_is():
    from ticket_triage.learning.gate import promote_if_better

    registry = FakeRegistry()
    failing = {"verdict": {"passed": False, "checks": []}}
    assert promote_if_better(failing, champion="a", challenger="b", registry=registry) is None
    assert registry.registered == [] and registry.promoted == []
    passing = {"verdict": {"passed": True, "checks": []}}
    version = promote_if_better(passing, champion="a", challenger="b", registry=registry)
    assert [v.path for v in registry.registered] == ["a", "b"]  # the champion first, so rollback has a target
    assert version.version == "v2" and registry.active().path == "b" and version.comparison is passing


def test_retrain_promote_if_better_end_to_end_does_not_promote_a_failing_challenger(
    current, make_prepared, tmp_path, monkeypatch, capsys
):
    """The CLI path: train, compare on the base test split + held-out corrections, and keep the
    champion when the gate fails (here: a rule no challenger can pass)."""
    from ticket_triage.cli import main
    from ticket_triage.learning import gate

    registry = FakeRegistry()
    monkeypatch.setattr(gate, "open_registry", lambda root: registry)
    base, _ = _base(make_prepared, tmp_path)
    feedback = _live_corrections(make_prepared, tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - metric: accuracy\n    sets: [corrections]\n    must_improve: true\n    min_gain_points: 101\n"
    )
    argv = [
        "retrain",
        "--base",
        str(base),
        "--model",
        str(current),
        "--feedback",
        str(feedback),
        "--out",
        str(tmp_path / "run"),
    ]
    argv += ["--promote-if-better", "--registry", str(tmp_path / "reg"), "--rules", str(rules), "--resamples", "50"]
    argv += ["--threads", "1", "--batch-size", "16"]
    monkeypatch.setattr(
        "ticket_triage.learning.retrain._train_config",
        _tiny_config_of(__import__("ticket_triage.learning.retrain", fromlist=["x"])._train_config),
    )
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert registry.registered == [] and registry.promoted == []
    report = json.loads((tmp_path / "run" / "compare" / "compare.json").read_text())
    assert set(report["sets"]) == {"base_test", "corrections"} and report["verdict"]["passed"] is False
    assert "not promoted" in capsys.readouterr().err


def _tiny_config_of(original):
    def tiny(cfg, labels):
        cfg.train_overrides = {**TINY, **{k: v for k, v in cfg.train_overrides.items() if v is not None}}
        return original(cfg, labels)

    return tiny


def test_promote_if_better_needs_a_registry(capsys, tmp_path):
    from _model_support import cli_error

    err = cli_error(
        capsys,
        [
            "retrain",
            "--base",
            "b",
            "--model",
            "m",
            "--feedback",
            "f.csv",
            "--out",
            str(tmp_path),
            "--promote-if-better",
        ],
    )
    assert "--registry" in err


def test_max_train_rows_caps_base_rows_and_keeps_every_correction(current, make_prepared, tmp_path):
    from ticket_triage.learning.retrain import RetrainConfig, retrain

    base, _ = _base(make_prepared, tmp_path)
    feedback = _live_corrections(make_prepared, tmp_path)
    cfg = RetrainConfig(
        base=base,
        model=current,
        feedback=str(feedback),
        out=tmp_path / "run",
        holdout_frac=0.0,
        train_overrides={**TINY, "max_train_rows": 24},
    )
    retrain(cfg, log=quiet, progress=False)
    train = pd.read_parquet(tmp_path / "run" / "data" / "train.parquet")
    assert (train["origin"] == "correction").sum() == 20 and (train["origin"] == "base").sum() <= 24
    summary = json.loads((tmp_path / "run" / "retrain.json").read_text())
    assert summary["config"]["train"]["max_train_rows"] is None


def test_balanced_class_weights_count_row_weights():
    """Heavy corrections weigh more within their class, without tilting the class balance."""
    from ticket_triage.training.data import balanced_class_weights

    labels = np.array([0, 0, 0, 1, 1, 2])
    plain = balanced_class_weights(labels, 3)
    np.testing.assert_allclose(plain, 6 / (3 * np.array([3, 2, 1])))
    np.testing.assert_allclose(balanced_class_weights(labels, 3, np.ones(6)), plain)
    weights = np.array([1, 1, 1, 3, 3, 1.0])
    class_w = balanced_class_weights(labels, 3, weights)
    mass = np.bincount(labels, weights=weights * class_w[labels], minlength=3)
    np.testing.assert_allclose(mass, mass[0])  # every class the same total weight in the loss
