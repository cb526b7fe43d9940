"""Distillation: the loss, teacher targets and their cache, unlabelled texts, the student folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _model_support import tiny_train_config

from ticket_triage import distill as distill_mod
from ticket_triage.data.io import load_splits
from ticket_triage.distill import DistillConfig, distill_model, read_unlabeled, teacher_targets
from ticket_triage.errors import ConfigError, ModelError
from ticket_triage.training import TrainConfig, train_model
from ticket_triage.training.targets import SoftTargets, distillation_loss, kl_to_teacher


def quiet(*_args, **_kwargs):
    pass


def tiny_config(model_dir, **overrides) -> TrainConfig:
    return tiny_train_config(model_dir, **{"epochs": 2, "checkpoint_every": 0, "patience": 5, **overrides})


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, small_prepared, tmp_path_factory):
    """A tiny BERT fine-tuned on the small split: the teacher."""
    run = tmp_path_factory.mktemp("teacher")
    return train_model(
        tiny_config(tiny_model_dir, epochs=3, seed=1), small_prepared, run, log=quiet, progress=False
    ).model_dir


# -- the loss ----------------------------------------------------------------------------------
def test_loss_is_cross_entropy_at_alpha_1_and_scaled_kl_at_alpha_0():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.log_softmax(torch.randn(5, 4), -1)
    y = torch.tensor([0, 1, 2, 3, 0])
    assert torch.isclose(
        distillation_loss(student, y, teacher, 3.0, 1.0), torch.nn.functional.cross_entropy(student, y)
    )
    kl = kl_to_teacher(student.numpy() / 1.0, teacher.numpy(), temperature=3.0)
    assert float(distillation_loss(student, y, teacher, 3.0, 0.0)) == pytest.approx(9 * kl, rel=1e-5)
    # equal to the teacher: no soft loss left
    assert float(distillation_loss(teacher.clone(), y, teacher, 2.0, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_unlabelled_rows_are_left_out_of_the_cross_entropy():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3, requires_grad=True), torch.log_softmax(torch.randn(4, 3), -1)
    y = torch.tensor([0, -1, 2, -1])
    loss = distillation_loss(student, y, teacher, 2.0, 0.5)
    ce = torch.nn.functional.cross_entropy(student[[0, 2]], y[[0, 2]])
    soft = (
        distillation_loss(student, torch.full((4,), -1), teacher, 2.0, 0.5) / 0.5
    )  # only unlabelled: the soft term alone
    assert float(loss.detach()) == pytest.approx(float((0.5 * ce + 0.5 * soft).detach()), rel=1e-5)
    loss.backward()
    assert student.grad[1].abs().sum() > 0  # an unlabelled row still learns from the teacher


# -- teacher targets ---------------------------------------------------------------------------
def test_teacher_targets_are_cached_and_reused(teacher_dir, small_prepared, tmp_path, monkeypatch):
    splits, labels = load_splits(small_prepared)
    texts = {
        "train": splits["train"].texts[:20],
        "val": splits["val"].texts[:5],
        "test": splits["test"].texts[:5],
        "unlabeled": ["my card was charged twice for one purchase"],
    }
    cfg = DistillConfig(teachers=[str(teacher_dir)])
    first = teacher_targets(cfg, [teacher_dir], labels, texts, tmp_path, quiet, progress=False)
    assert first["train"].shape == (20, len(labels))
    assert np.allclose(np.exp(first["val"]).sum(1), 1.0, atol=1e-4)  # log-probabilities

    def must_not_score(*_a, **_k):
        raise AssertionError("the cached targets should have been reused")

    monkeypatch.setattr(distill_mod, "_score_teacher", must_not_score)
    again = teacher_targets(cfg, [teacher_dir], labels, texts, tmp_path, quiet, progress=False)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    # other texts: the cache does not apply, the teacher is asked again
    with pytest.raises(AssertionError, match="reused"):
        teacher_targets(
            cfg,
            [teacher_dir],
            labels,
            {**texts, "unlabeled": ["another text entirely"]},
            tmp_path,
            quiet,
            progress=False,
        )


def test_several_teachers_are_averaged_in_probability(teacher_dir, tiny_model_dir, small_prepared, tmp_path):
    other = train_model(
        tiny_config(tiny_model_dir, epochs=1, seed=3), small_prepared, tmp_path / "other", log=quiet, progress=False
    ).model_dir
    splits, labels = load_splits(small_prepared)
    texts = {
        "train": splits["train"].texts[:10],
        "val": splits["val"].texts[:3],
        "test": splits["test"].texts[:3],
        "unlabeled": [],
    }
    cfg = DistillConfig(teachers=[str(teacher_dir), str(other)])
    one = teacher_targets(cfg, [teacher_dir], labels, texts, tmp_path / "a", quiet, progress=False)
    two = teacher_targets(cfg, [other], labels, texts, tmp_path / "b", quiet, progress=False)
    both = teacher_targets(cfg, [teacher_dir, other], labels, texts, tmp_path / "c", quiet, progress=False)
    expected = np.log((np.exp(one["train"]) + np.exp(two["train"])) / 2)
    assert np.allclose(both["train"], expected, atol=1e-4)
    assert not np.allclose(one["train"], two["train"], atol=1e-3)


# -- unlabelled texts ----------------------------------------------------------------------------
def test_unlabelled_copies_and_near_duplicates_of_graded_texts_are_dropped(small_prepared, tmp_path):
    splits, _ = load_splits(small_prepared)
    val_text = splits["val"].texts[0]
    words = val_text.split()
    near = " ".join(words[:-2]) + " thank you."  # the same complaint with its last words changed
    fresh = "My mortgage servicer added escrow shortages to my monthly payment without telling me why, and the statements do not match."
    rows = [val_text.upper(), near, fresh, fresh, "too short", splits["train"].texts[0]]
    path = tmp_path / "unlabeled.csv"
    pd.DataFrame({"Consumer complaint narrative": rows}).to_csv(path, index=False)
    lines = []
    kept = read_unlabeled(DistillConfig(teachers=["x"], unlabeled=[str(path)]), splits, small_prepared, lines.append)
    assert len(words) > 20  # long enough for the near-duplicate to stay above the threshold
    assert kept == [fresh]
    assert "near-duplicates" in lines[0] and "1 used" in lines[0]


# -- the whole run -------------------------------------------------------------------------------
def test_distillation_pulls_the_student_towards_its_teacher(teacher_dir, tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.inference import Classifier

    splits, labels = load_splits(small_prepared)
    unlabeled = tmp_path / "unlabeled.csv"
    extra = [f"{t} (forwarded again)" for t in pd.read_parquet(small_prepared / "train.parquet")["text"].tolist()[:40]]
    pd.DataFrame({"text": extra}).to_csv(unlabeled, index=False)
    cfg = DistillConfig(
        teachers=[str(teacher_dir)], temperature=2.0, alpha=0.0, unlabeled=[str(unlabeled)], train_alone=True
    )
    student_cfg = tiny_config(tiny_model_dir, epochs=3, seed=11, baseline=True)
    result = distill_model(cfg, student_cfg, small_prepared, tmp_path / "run", log=quiet, progress=False)

    teacher_val = Classifier.load(teacher_dir, backend="torch").predict_logits(splits["val"].texts)
    distilled = Classifier.load(result.student.model_dir, backend="torch").predict_logits(splits["val"].texts)
    alone = Classifier.load(result.alone.model_dir, backend="torch").predict_logits(splits["val"].texts)
    assert kl_to_teacher(distilled, teacher_val) < kl_to_teacher(alone, teacher_val)

    meta = json.loads((result.student.model_dir / "triage.json").read_text())
    assert meta["teacher"]["folders"] == [str(teacher_dir.resolve())] and meta["teacher"]["alpha"] == 0.0
    report = json.loads((tmp_path / "run" / "distillation.json").read_text())
    assert set(report["models"]) == {"teacher", "student", "student_alone"}
    assert report["unlabeled_texts"] == 40
    assert 0 <= report["models"]["student"]["val_agreement_with_teacher"] <= 1
    assert "student trained alone" in (tmp_path / "run" / "distillation.md").read_text()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["distillation"]["alpha"] == 0.0
    # an ordinary model folder: scores texts through the one Classifier path
    assert len(Classifier.load(result.student.model_dir).predict(["my credit report shows a debt i do not owe"])) == 1


def test_distill_kl_falls_below_the_untrained_students(teacher_dir, tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.inference import Classifier
    from ticket_triage.modeling import build_model, load_tokenizer
    from ticket_triage.training.loop import model_meta, seed_everything

    splits, labels = load_splits(small_prepared)
    cfg = DistillConfig(teachers=[str(teacher_dir)], temperature=1.0, alpha=0.0)
    texts = {"train": splits["train"].texts, "val": splits["val"].texts, "test": splits["test"].texts, "unlabeled": []}
    targets = teacher_targets(cfg, [teacher_dir], labels, texts, tmp_path, quiet, progress=False)
    student_cfg = tiny_config(tiny_model_dir, epochs=2, seed=11)
    seed_everything(student_cfg.seed)
    fresh = build_model(str(tiny_model_dir), labels)
    scorer = Classifier.from_model(
        fresh, load_tokenizer(str(tiny_model_dir)), model_meta(student_cfg, labels), device="cpu"
    )
    before = scorer.predict_logits(splits["train"].texts)
    result = train_model(
        student_cfg,
        small_prepared,
        tmp_path / "run",
        log=quiet,
        progress=False,
        soft_targets=SoftTargets(targets["train"], 1.0, 0.0),
    )
    after = Classifier.load(result.model_dir, backend="torch").predict_logits(splits["train"].texts)
    assert kl_to_teacher(after, targets["train"]) < 0.5 * kl_to_teacher(before, targets["train"])


def test_resume_reuses_the_cached_targets(teacher_dir, tiny_model_dir, small_prepared, tmp_path, monkeypatch):
    cfg = DistillConfig(teachers=[str(teacher_dir)])
    distill_model(
        cfg, tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "run", log=quiet, progress=False
    )
    calls = []
    real = distill_mod._score_teacher
    monkeypatch.setattr(distill_mod, "_score_teacher", lambda *a, **k: calls.append(1) or real(*a, **k))
    lines = []
    distill_model(
        cfg,
        tiny_config(tiny_model_dir, epochs=1),
        small_prepared,
        tmp_path / "run",
        resume=True,
        log=lines.append,
        progress=False,
    )
    assert calls == [] and any("reusing" in line for line in lines)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(teachers=[]), "at least one teacher"),
        (dict(teachers=["t"], temperature=0), "temperature must be positive"),
        (dict(teachers=["t"], alpha=1.5), "from 0 to 1"),
        (dict(teachers=["t"], train_alone=True, alone_run="x"), "not both"),
    ],
)
def test_invalid_settings_say_what_to_do(settings, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**settings)


def test_a_teacher_of_another_taxonomy_or_no_folder_is_refused(teacher_dir, tiny_model_dir, small_prepared, tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        distill_model(
            DistillConfig(teachers=[str(tmp_path)]),
            tiny_config(tiny_model_dir),
            small_prepared,
            tmp_path / "run",
            log=quiet,
        )
    meta = json.loads((teacher_dir / "triage.json").read_text())
    other = tmp_path / "other-teacher"
    other.mkdir()
    (other / "triage.json").write_text(json.dumps({**meta, "labels": ["A", "B"]}))
    with pytest.raises(ModelError, match="same taxonomy"):
        distill_model(
            DistillConfig(teachers=[str(other)]),
            tiny_config(tiny_model_dir),
            small_prepared,
            tmp_path / "run",
            log=quiet,
        )


def test_cli_distill_runs_and_reports(teacher_dir, tiny_model_dir, small_prepared, tmp_path, capsys):
    from ticket_triage.cli import main

    out = tmp_path / "cli-run"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "distill",
                "--teacher",
                str(teacher_dir),
                "--data",
                str(small_prepared),
                "--out",
                str(out),
                "--student",
                str(tiny_model_dir),
                "--epochs",
                "1",
                "--max-length",
                "48",
                "--precision",
                "fp32",
                "--no-baseline",
                "--temperature",
                "3",
                "--alpha",
                "0.3",
            ]
        )
    assert done.value.code == 0
    assert (out / "model" / "model.safetensors").is_file() and (out / "distillation.md").is_file()
    saved = yaml.safe_load((out / "distill_config.yaml").read_text())
    assert saved["temperature"] == 3 and saved["alpha"] == 0.3
    # an ordinary model folder for the other commands
    for argv in (
        [
            "calibrate",
            "--model",
            str(out / "model"),
            "--data",
            str(small_prepared / "val.parquet"),
            "--out",
            str(tmp_path / "cal"),
        ],
        ["export", "--model", str(out / "model"), "--out", str(tmp_path / "onnx"), "--quantize", "int8"],
        [
            "evaluate",
            "--model",
            str(tmp_path / "onnx"),
            "--data",
            str(small_prepared / "test.parquet"),
            "--out",
            str(tmp_path / "eval"),
        ],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0, argv
    assert (tmp_path / "onnx" / "model.int8.onnx").is_file() and json.loads(
        (tmp_path / "onnx" / "triage.json").read_text()
    )["teacher"]["temperature"] == 3
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 60
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "distill",
                "--teacher",
                str(tmp_path / "missing"),
                "--data",
                str(small_prepared),
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exit_info.value.code == 1
    assert "not a model folder" in capsys.readouterr().err


def test_an_earlier_alone_run_is_scored_like_the_student(tmp_path):
    from ticket_triage.distill import _alone_metrics

    transformer = {"macro_f1": 0.70, "accuracy": 0.75, "recall": {"A": 0.6}}
    hybrid = {"macro_f1": 0.80, "accuracy": 0.85, "recall": {"A": 0.7}}
    metrics = {
        "history": [{"val_macro_f1": 0.72, "val_accuracy": 0.77}],
        "test": {"macro_f1": 0.80, "accuracy": 0.85, "per_class": {"A": {"recall": 0.7}}},
        "ensemble": {
            "scores": {
                "validation": {"transformer": transformer, "hybrid": hybrid},
                "test": {"transformer": transformer, "hybrid": hybrid},
            }
        },
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    cfg = DistillConfig(teachers=["t"], alone_run=str(tmp_path))
    assert (
        _alone_metrics(cfg, None, "none")["test"]["macro_f1"] == 0.70
    )  # the student has no hybrid: compare transformers
    shipped = _alone_metrics(cfg, None, "tfidf")  # both hybrids, as shipped
    assert (
        shipped["test"]["macro_f1"] == 0.80 and shipped["val"]["macro_f1"] == 0.70
    )  # hybrid not enabled: its transformer
    metrics["ensemble"]["enabled"] = True
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert _alone_metrics(cfg, None, "tfidf")["val"]["macro_f1"] == 0.80
    with pytest.raises(ConfigError, match="no metrics.json"):
        _alone_metrics(DistillConfig(teachers=["t"], alone_run=str(tmp_path / "nope")), None, "none")


def test_an_mpnet_teacher_teaches_a_bert_student(tiny_model_dir, small_prepared, cfpb_words, tmp_path):
    """Teacher and student share only the label set: targets are per text, not per token."""
    from ticket_triage.modeling import tiny_mpnet

    mpnet = tiny_mpnet(tmp_path / "tiny-mpnet", cfpb_words)
    teacher = train_model(
        tiny_config(mpnet, epochs=1), small_prepared, tmp_path / "teacher", log=quiet, progress=False
    ).model_dir
    result = distill_model(
        DistillConfig(teachers=[str(teacher)], alpha=0.2),
        tiny_config(tiny_model_dir, epochs=1),
        small_prepared,
        tmp_path / "student",
        log=quiet,
        progress=False,
    )
    meta = json.loads((result.student.model_dir / "triage.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir) and meta["teacher"]["base_models"] == [str(mpnet)]
    assert result.report["models"]["teacher"]["test"]["macro_f1"] >= 0
