"""Training loop, run folder, resume, freezing, configuration: on a tiny random BERT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _model_support import tiny_train_config

from ticket_triage.errors import ConfigError
from ticket_triage.training import TrainConfig, train_model


def tiny_config(model_dir, **overrides) -> TrainConfig:
    return tiny_train_config(model_dir, **{"epochs": 2, "checkpoint_every": 3, **overrides})


def quiet(*_args, **_kwargs):
    pass


class Killed(Exception):
    """Stands for a crash or a kill in the middle of a run."""


def kill_at_step(n: int):
    """An `on_step` callback that dies right after optimizer step `n`."""

    def on_step(step: int) -> None:
        if step == n:
            raise Killed

    return on_step


def test_run_folder_has_everything(tiny_model_dir, small_prepared, tmp_path):
    result = train_model(
        tiny_config(tiny_model_dir, baseline=True, calibrate=True), small_prepared, tmp_path / "run", log=quiet
    )
    run = tmp_path / "run"
    for name in (
        "metrics.json",
        "classification_report.md",
        "confusion_matrix.png",
        "loss_curves.png",
        "train_config.yaml",
        "calibration.json",
        "reliability_diagram.png",
        "coverage.png",
    ):
        assert (run / name).stat().st_size > 0, name
    assert not (run / "checkpoint").exists(), "a finished run must not leave a resumable checkpoint behind"
    model_files = {p.name for p in (run / "model").iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "triage.json",
        "taxonomy.yaml",
        "train_config.yaml",
        "metrics.json",
    } <= model_files
    assert not [p for p in model_files if p.endswith((".bin", ".pt", ".pkl"))], "model folder must hold no pickles"

    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for record in metrics["history"]:
        assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"} <= set(record)
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"])
    test = metrics["test"]
    assert set(test["per_class"]) == {
        "Credit Reporting",
        "Debt Collection",
        "Mortgage",
        "Card Services",
        "Loans",
        "Banking Services",
    }
    assert sum(row["support"] for row in test["per_class"].values()) == test["n"] == 60
    assert 0 <= test["macro_f1"] <= 1 and metrics["train_samples_per_s"] > 0
    assert metrics["baseline"]["macro_f1"] > 0.2, "the TF-IDF baseline learns something from 240 rows"
    report = (run / "classification_report.md").read_text()
    assert "baseline macro-F1" in report and "Banking Services" in report
    assert result.best_epoch in (1, 2)
    temperature = json.loads((run / "model" / "triage.json").read_text())["temperature"]
    assert temperature == pytest.approx(metrics["calibration"]["temperature"]) and temperature != 1.0
    assert "ECE" in report


def test_labels_survive_save_and_load(tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.modeling import load_model_folder

    train_model(tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "run", log=quiet)
    model, _tokenizer, meta = load_model_folder(tmp_path / "run" / "model")
    assert meta.labels == [
        "Credit Reporting",
        "Debt Collection",
        "Mortgage",
        "Card Services",
        "Loans",
        "Banking Services",
    ]
    assert [model.config.id2label[i] for i in range(6)] == meta.labels
    assert not any(name.startswith("LABEL_") for name in model.config.id2label.values())
    assert meta.max_length == 48 and meta.truncation == "head+tail"


def test_resume_after_interruption_matches_uninterrupted_run(tiny_model_dir, small_prepared, tmp_path):
    config = tiny_config(tiny_model_dir, epochs=2, checkpoint_every=2)
    straight = train_model(config, small_prepared, tmp_path / "straight", log=quiet)

    with pytest.raises(Killed):  # 15 steps per epoch: this dies in the middle of epoch 2
        train_model(config, small_prepared, tmp_path / "resumed", on_step=kill_at_step(21), log=quiet)
    assert (tmp_path / "resumed" / "checkpoint").is_dir()
    with pytest.raises(ConfigError, match="--resume"):
        train_model(config, small_prepared, tmp_path / "resumed", log=quiet)
    resumed = train_model(config, small_prepared, tmp_path / "resumed", resume=True, log=quiet)

    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    assert straight.test["macro_f1"] == pytest.approx(resumed.test["macro_f1"])
    assert straight.test["confusion_matrix"] == resumed.test["confusion_matrix"]


def test_same_seed_same_metrics_other_seed_differs(tiny_model_dir, small_prepared, tmp_path):
    one = train_model(tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "a", log=quiet)
    two = train_model(tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "b", log=quiet)
    other = train_model(tiny_config(tiny_model_dir, epochs=1, seed=8), small_prepared, tmp_path / "c", log=quiet)
    assert one.history[0]["val_loss"] == two.history[0]["val_loss"]
    assert one.history[0]["val_loss"] != other.history[0]["val_loss"]


def test_freeze_encoder_leaves_encoder_unchanged(tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.modeling import build_model, load_model_folder

    config = tiny_config(tiny_model_dir, epochs=1, freeze_encoder=True)
    train_model(config, small_prepared, tmp_path / "run", log=quiet)
    trained, _tok, meta = load_model_folder(tmp_path / "run" / "model")
    assert meta.pooling == "mean"
    fresh = build_model(str(tiny_model_dir), meta.labels, pooling="mean")
    before = fresh.encoder.state_dict()
    after = trained.encoder.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert np.array_equal(before[name].numpy(), after[name].numpy()), f"encoder weight {name} changed"
    assert not np.allclose(fresh.classifier.weight.detach().numpy(), trained.classifier.weight.detach().numpy()), (
        "the head must train"
    )


def test_max_train_rows_and_class_weights(tiny_model_dir, small_prepared, tmp_path):
    import pandas as pd

    config = tiny_config(
        tiny_model_dir, epochs=1, max_train_rows=50, class_weights="balanced", baseline=True, ensemble="tfidf"
    )
    result = train_model(config, small_prepared, tmp_path / "run", log=quiet)
    assert result.metrics["train_rows"] == 50
    # the cap is the transformer's: the baseline and the hybrid's TF-IDF half read the whole split
    all_rows = len(pd.read_parquet(small_prepared / "train.parquet"))
    assert all_rows > 50
    assert result.metrics["baseline"]["train_rows"] == result.metrics["ensemble"]["tfidf"]["train_rows"] == all_rows


def test_early_stopping_keeps_best_epoch(tiny_model_dir, small_prepared, tmp_path):
    # lr 0: nothing improves after epoch 1, so patience 1 stops after epoch 2 and keeps epoch 1.
    result = train_model(
        tiny_config(tiny_model_dir, epochs=5, lr=0.0, patience=1), small_prepared, tmp_path / "run", log=quiet
    )
    assert len(result.history) == 2 and result.best_epoch == 1


def test_resume_after_the_early_stop_only_writes_the_report(tiny_model_dir, small_prepared, tmp_path):
    """Killed after the epoch that stopped it early (its checkpoint written, its report not):
    --resume must not train on, it only scores the kept best epoch."""
    config = tiny_config(tiny_model_dir, epochs=5, lr=0.0, patience=1)

    def kill_after_epoch_2(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_model(config, small_prepared, tmp_path / "run", on_epoch_end=kill_after_epoch_2, log=quiet)
    resumed = train_model(config, small_prepared, tmp_path / "run", resume=True, log=quiet)
    assert len(resumed.history) == 2 and resumed.best_epoch == 1
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_length=1024), "512"),
        (dict(truncation="middle"), "head\\+tail"),
        (dict(epochs=0), "epochs"),
        (dict(class_weights="inverse"), "balanced"),
        (dict(precision="int4"), "precision"),
        (dict(layer_lr_decay=0), "layer_lr_decay"),
        (dict(layer_lr_decay=1.5), "1 turns it off"),
        (dict(ensemble="svm"), "'none' or 'tfidf'"),
        (dict(long_text="sliding"), "long_text must be one of truncate, chunks"),
        (dict(chunk_pool="sum"), "chunk_pool must be one of mean, max, attention"),
        (dict(max_chunks=1), "long_text 'truncate'"),
        (dict(chunk_overlap=1.0), "0 to 0.9"),
        (dict(chunk_overlap="quarter"), "chunk_overlap"),
    ],
)
def test_invalid_config_says_what_to_do(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_yaml_config_with_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 4\nlearning_rate: 3.0e-5\nmax_length: 128\n")
    config = TrainConfig.from_yaml(path, epochs=2)
    assert (config.epochs, config.lr, config.max_length) == (2, 3e-5, 128)
    path.write_text("epoks: 4\n")
    with pytest.raises(ConfigError, match="unknown training setting 'epoks'"):
        TrainConfig.from_yaml(path)


def _determinism_flags():
    import torch

    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )


def test_deterministic_kernels_switch_on_for_cuda_only_and_are_put_back(monkeypatch):
    import os

    import torch

    from ticket_triage.training.loop import deterministic_kernels

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset-by-test")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # teardown restores whatever was there before
    before = _determinism_flags()
    for device, enabled in ((torch.device("cpu"), True), (torch.device("cuda"), False)):
        with deterministic_kernels(device, enabled) as attention:
            assert attention is None and _determinism_flags() == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    # Only flags are set here (no kernel runs), so this needs no GPU.
    with deterministic_kernels(torch.device("cuda:0"), True) as attention:
        assert attention == "eager"
        assert _determinism_flags() == (True, True, True, False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert _determinism_flags() == before


def test_training_under_deterministic_kernels_builds_eager_attention_and_restores_flags(
    tiny_model_dir, small_prepared, tmp_path, monkeypatch
):
    """The CUDA branch of a run, exercised on CPU: the switch is entered, the model is built with
    plain attention, and the process-wide flags come back even when the run ends in an exception."""
    import torch

    from ticket_triage.training import loop

    class StopTraining(Exception):
        """What a pruner's callback raises to end a run."""

    real = loop.deterministic_kernels
    monkeypatch.setattr(loop, "deterministic_kernels", lambda device, enabled: real(torch.device("cuda"), enabled))
    built = []  # the attention implementation of each model the runs build
    real_build = loop.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append(model.config._attn_implementation)
        return model

    monkeypatch.setattr(loop, "build_model", build)
    before = _determinism_flags()

    result = train_model(tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "run", log=quiet)
    assert built == ["eager"] and result.metrics["run"]["deterministic_kernels"] is True
    assert _determinism_flags() == before
    assert "attn_implementation" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())

    def stop(_record):
        assert torch.are_deterministic_algorithms_enabled(), "deterministic mode lasts the whole run"
        raise StopTraining

    with pytest.raises(StopTraining):
        train_model(
            tiny_config(tiny_model_dir, epochs=2), small_prepared, tmp_path / "stopped", on_epoch_end=stop, log=quiet
        )
    assert _determinism_flags() == before

    off = train_model(
        tiny_config(tiny_model_dir, epochs=1, deterministic=False), small_prepared, tmp_path / "off", log=quiet
    )
    assert built[-1] != "eager" and off.metrics["run"]["deterministic_kernels"] is False


def test_loss_read_back_every_few_steps_gives_the_same_history_and_resume(
    tiny_model_dir, small_prepared, tmp_path, monkeypatch
):
    """On a GPU the loop reads the summed loss only every few steps (a read is a host sync). Forced
    here on CPU: every batch's loss must still be counted once, across checkpoints and a resume."""
    from ticket_triage.training import loop

    config = tiny_config(tiny_model_dir, epochs=2, checkpoint_every=2)
    every_step = train_model(config, small_prepared, tmp_path / "every", log=quiet)
    monkeypatch.setattr(loop, "_steps_between_loss_reads", lambda device: 7)  # 15 steps per epoch: not a divisor
    sparse = train_model(config, small_prepared, tmp_path / "sparse", log=quiet)

    # Step 23: in epoch 2, after the checkpoint at step 22 and between the loss reads at 21 and
    # 28, so the resumed run redoes a step whose loss was summed but never read.
    with pytest.raises(Killed):
        train_model(config, small_prepared, tmp_path / "resumed", on_step=kill_at_step(23), log=quiet)
    resumed = train_model(config, small_prepared, tmp_path / "resumed", resume=True, log=quiet)
    for a, b, c in zip(every_step.history, sparse.history, resumed.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert c["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert a["val_loss"] == b["val_loss"]


def test_layer_lr_decay_gives_each_layer_its_own_rate(tiny_model_dir):
    from ticket_triage.modeling import build_model
    from ticket_triage.training.loop import param_groups

    model = build_model(str(tiny_model_dir), ["a", "b", "c"])
    n_layers = model.config.num_hidden_layers
    lr_of = {}
    for group in param_groups(model, 0.01, lr=1e-3, layer_lr_decay=0.5):
        for p in group["params"]:
            lr_of[id(p)] = (group["lr"], group["weight_decay"])
    by_name = {name: lr_of[id(p)] for name, p in model.named_parameters()}
    assert by_name["classifier.weight"] == (1e-3, 0.01)
    assert by_name["classifier.bias"] == (1e-3, 0.0)
    top = f"bert.encoder.layer.{n_layers - 1}.attention.self.query.weight"
    assert by_name[top][0] == pytest.approx(1e-3 * 0.5)
    assert by_name["bert.encoder.layer.0.attention.self.query.weight"][0] == pytest.approx(1e-3 * 0.5**n_layers)
    assert by_name["bert.embeddings.word_embeddings.weight"][0] == pytest.approx(1e-3 * 0.5 ** (n_layers + 1))
    assert by_name["bert.embeddings.LayerNorm.weight"][1] == 0.0
    # off: the two plain groups, every parameter at the base rate
    plain = param_groups(model, 0.01, lr=1e-3)
    assert [g["weight_decay"] for g in plain] == [0.01, 0.0] and {g["lr"] for g in plain} == {1e-3}
    assert sum(len(g["params"]) for g in plain) == len(list(model.parameters()))


def test_chunks_training_reads_whole_texts_and_its_scorers_agree(tiny_model_dir, small_prepared, tmp_path, monkeypatch):
    """--long-text chunks end to end: windows in training, settings in triage.json, and the
    validation and test splits scored exactly as `Classifier` (predict, serve, calibrate) scores them."""
    import pandas as pd

    from ticket_triage import Classifier
    from ticket_triage.calibration import nll

    scored = []  # every (N, C) a Classifier returns: validation in the loop, then validation and test at the end
    real = Classifier.predict_logits
    monkeypatch.setattr(Classifier, "predict_logits", lambda *a, **k: scored.append(real(*a, **k)) or scored[-1])
    lines = []
    config = tiny_config(
        tiny_model_dir, epochs=1, max_length=24, long_text="chunks", chunk_overlap=0.5, max_chunks=3, chunk_pool="max"
    )
    result = train_model(config, small_prepared, tmp_path / "run", log=lines.append)
    note = next(line for line in lines if line.startswith("training "))
    per_ticket = float(note.split("(")[1].split(" per ticket")[0])
    assert 1.5 < per_ticket <= 3, f"most complaints are longer than 22 tokens: {note}"

    meta = json.loads((tmp_path / "run" / "model" / "triage.json").read_text())
    assert {k: meta[k] for k in ("long_text", "chunk_overlap", "max_chunks", "chunk_pool", "max_length")} == {
        "long_text": "chunks",
        "chunk_overlap": 0.5,
        "max_chunks": 3,
        "chunk_pool": "max",
        "max_length": 24,
    }
    monkeypatch.undo()
    clf = Classifier.load(tmp_path / "run" / "model", backend="torch", device="cpu")
    val, test = (pd.read_parquet(small_prepared / f"{name}.parquet") for name in ("val", "test"))
    assert len(scored) == 3 and all(s.shape == (60, 6) for s in scored)
    scored = [scored[0], scored[2]]
    val_logits = clf.predict_logits(val["text"].tolist())
    # A random tiny model's logits are small (~0.05): compare them tightly, and make sure the
    # pooling choice moves them far more than that, so a scorer pooling otherwise would fail here.
    np.testing.assert_allclose(scored[0], val_logits, atol=1e-6)
    np.testing.assert_allclose(scored[1], clf.predict_logits(test["text"].tolist()), atol=1e-6)
    clf.meta.chunk_pool = "mean"
    assert np.abs(clf.predict_logits(val["text"].tolist()) - val_logits).max() > 1e-4
    assert result.history[0]["val_loss"] == pytest.approx(
        nll(val_logits, val["label"].map(clf.labels.index).to_numpy()), abs=1e-6
    )


def test_chunks_training_resumes_like_an_uninterrupted_run(tiny_model_dir, small_prepared, tmp_path):
    config = tiny_config(
        tiny_model_dir,
        epochs=1,
        max_length=24,
        long_text="chunks",
        max_chunks=3,
        chunk_pool="attention",
        checkpoint_every=4,
    )
    straight = train_model(config, small_prepared, tmp_path / "straight", log=quiet)
    with pytest.raises(Killed):  # 15 steps: dies after the checkpoint at step 8
        train_model(config, small_prepared, tmp_path / "resumed", on_step=kill_at_step(10), log=quiet)
    resumed = train_model(config, small_prepared, tmp_path / "resumed", resume=True, log=quiet)
    assert resumed.history[0]["train_loss"] == pytest.approx(straight.history[0]["train_loss"], abs=1e-6)
    assert resumed.history[0]["val_loss"] == pytest.approx(straight.history[0]["val_loss"], abs=1e-6)
    assert straight.test["confusion_matrix"] == resumed.test["confusion_matrix"]


def test_cli_long_text_options_reach_the_config(small_prepared, tmp_path, capsys, monkeypatch):
    from _model_support import cli_error, cli_ok

    import ticket_triage.training as training
    from ticket_triage.training import TrainResult

    seen = []

    def fake_train(cfg, data, out, **_kwargs):
        seen.append(cfg)
        return TrainResult(out_dir=out, model_dir=out / "model", history=[], test={}, best_epoch=0)

    monkeypatch.setattr(training, "train_model", fake_train)
    base = ["train", "--data", str(small_prepared), "--out", str(tmp_path / "run")]
    cli_ok(base + ["--long-text", "chunks", "--chunk-pool", "attention", "--max-chunks", "3", "--chunk-overlap", "0.5"])
    assert (seen[0].long_text, seen[0].chunk_pool, seen[0].max_chunks, seen[0].chunk_overlap) == (
        "chunks",
        "attention",
        3,
        0.5,
    )
    cli_ok(base)
    assert (seen[1].long_text, seen[1].max_chunks) == ("truncate", 8)
    capsys.readouterr()  # the two runs' "done" lines
    assert "long_text must be one of truncate, chunks" in cli_error(capsys, base + ["--long-text", "sliding"])


def test_the_training_loop_imports_no_evaluation_module():
    """loop.py only trains: reports, plots and metrics tables belong to the run's finish (finish.py)."""
    import subprocess
    import sys

    code = "import sys, ticket_triage.training.loop; print(sorted(m for m in sys.modules if m.startswith('ticket_triage.evaluation')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"format_version": 99, "labels": ["a"]}, "format version 99.*reads version 1.*triage data prepare"),
        ({"labels": ["a"]}, "format version None"),
    ],
)
def test_a_prepared_folder_of_another_format_version_is_refused(small_prepared, tmp_path, manifest, message):
    """One reader (data/io.py) checks the manifest's version; labels never fall back to a sorted guess."""
    import shutil

    from ticket_triage.data.io import load_splits
    from ticket_triage.errors import DataError

    folder = tmp_path / "data"
    shutil.copytree(small_prepared, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message):
        load_splits(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        load_splits(folder)


def test_prepare_writes_the_format_version_the_reader_reads():
    from ticket_triage.data import io, prepare

    assert prepare.FORMAT_VERSION == io.FORMAT_VERSION and prepare.SPLITS == io.SPLITS


def test_model_folder_records_its_format_versions_data_and_commit(tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.modeling import MODEL_FORMAT_VERSION
    from ticket_triage.provenance import prepared_data_hash

    train_model(tiny_config(tiny_model_dir, epochs=1), small_prepared, tmp_path / "run", log=quiet)
    meta = json.loads((tmp_path / "run" / "model" / "triage.json").read_text())
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    made = meta["provenance"]
    assert made["data"] == {"path": str(small_prepared.resolve()), "sha256": prepared_data_hash(small_prepared)}
    assert {"ticket_triage", "python", "torch", "transformers"} <= set(made["versions"])
    assert "git_commit" in made  # a commit in a checkout, None for an installed package


def _killed_run(tiny_model_dir, small_prepared, out, **overrides):
    config = tiny_config(tiny_model_dir, epochs=2, **overrides)
    with pytest.raises(Killed):
        train_model(config, small_prepared, out, on_step=kill_at_step(4), log=quiet)
    return config


def test_resume_refuses_settings_that_change_the_run_and_allows_the_safe_ones(tiny_model_dir, small_prepared, tmp_path):
    import dataclasses

    from ticket_triage.training.checkpoint import read_checkpoint, resume_config

    config = _killed_run(tiny_model_dir, small_prepared, tmp_path / "run")
    saved = read_checkpoint(tmp_path / "run")
    assert saved["config"] == config.to_dict() and saved["loop"].step == 3
    with pytest.raises(ConfigError, match=r"lr 0.001 -> 0.01.*leave those options out.*only .*device.*may change"):
        train_model(dataclasses.replace(config, lr=1e-2), small_prepared, tmp_path / "run", resume=True, log=quiet)
    # The CLI's path: the checkpoint's config, with options given on top.
    assert resume_config(tmp_path / "run", {"threads": 2, "lr": None}, fresh=None) == dataclasses.replace(
        config, threads=2
    )
    with pytest.raises(ConfigError, match="epochs 2 -> 5"):
        resume_config(tmp_path / "run", {"epochs": 5}, fresh=None)
    resumed = train_model(
        dataclasses.replace(config, eval_batch_size=7), small_prepared, tmp_path / "run", resume=True, log=quiet
    )
    assert len(resumed.history) == 2


def test_resume_cli_takes_the_checkpoints_config_and_refuses_a_conflict_in_one_line(
    tiny_model_dir, small_prepared, tmp_path, capsys
):
    from _model_support import cli_error, cli_ok

    _killed_run(tiny_model_dir, small_prepared, tmp_path / "run", max_length=40)
    capsys.readouterr()  # its progress bars
    base = ["train", "--data", str(small_prepared), "--out", str(tmp_path / "run"), "--resume"]
    err = cli_error(capsys, base + ["--max-length", "64"])
    assert "max_length 40 -> 64" in err and "--resume continues a run as it was" in err
    cli_ok(base + ["--threads", "1"])  # no --model, no --max-length: all from the checkpoint
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert saved["max_length"] == 40 and saved["model"] == str(tiny_model_dir) and saved["lr"] == 1e-3


def test_an_old_checkpoint_without_a_config_is_a_clear_error(tiny_model_dir, small_prepared, tmp_path):
    import torch

    from ticket_triage.training.checkpoint import resume_config

    config = _killed_run(tiny_model_dir, small_prepared, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    del state["config"], state["format"]
    torch.save(state, path)
    with pytest.raises(
        ConfigError, match="checkpoint format 1.*cannot be resumed: delete it and train again without --resume"
    ):
        train_model(config, small_prepared, tmp_path / "run", resume=True, log=quiet)
    with pytest.raises(ConfigError, match="checkpoint format 1"):
        resume_config(tmp_path / "run", {}, fresh=None)
