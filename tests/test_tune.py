"""Hyperparameter search: outputs, pruning, parallel workers, resume, bad spaces, CLI.

All on the tiny random BERT and the small split: 1-2 epochs of 240 rows per trial.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from ticket_triage.errors import ConfigError
from ticket_triage.training import TrainConfig
from ticket_triage.tuning import TuneConfig, load_space, tune

optuna = pytest.importorskip("optuna")

SPACE = """
lr:         {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
batch_size: {type: categorical, choices: [16, 32]}
truncation: {type: categorical, choices: [head, head+tail]}
"""


def quiet(*_args, **_kwargs):
    pass


def make_config(
    tiny_model_dir, small_prepared, tmp_path, space: str = SPACE, train: dict | None = None, **settings
) -> TuneConfig:
    space_path = tmp_path / "space.yaml"
    space_path.write_text(space)
    fixed = dict(model=str(tiny_model_dir), epochs=1, max_length=32, precision="fp32", threads=1, seed=7)
    fixed.update(train or {})
    settings.setdefault("pruner", "none")
    return TuneConfig(
        data_dir=str(small_prepared), out_dir=str(tmp_path / "study"), space=str(space_path), train=fixed, **settings
    )


def read_trials_csv(config: TuneConfig) -> list[dict]:
    with open(os.path.join(config.out_dir, "trials.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def storage_trials(config: TuneConfig):
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url).get_trials()


def test_study_writes_every_output_and_retrains_best(tiny_model_dir, small_prepared, tmp_path):
    config = make_config(tiny_model_dir, small_prepared, tmp_path, n_trials=4, sampler="random", retrain_best=True)
    result = tune(config, log=quiet)
    study = tmp_path / "study"

    rows = read_trials_csv(config)
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["duration_s"]) > 0 and 0 <= float(r["value"]) <= 1 for r in rows)
    assert all(set(json.loads(r["params"])) == {"lr", "batch_size", "truncation"} for r in rows)
    assert len({r["params"] for r in rows}) == 4, "a random sampler over a continuous lr gives 4 different trials"

    # best_params.yaml is a full TrainConfig: the fixed settings plus the best values.
    best = TrainConfig.from_yaml(study / "best_params.yaml")
    assert best.model == str(tiny_model_dir) and best.max_length == 32 and best.epochs == 1
    assert (best.lr, best.batch_size, best.truncation) == (
        result.best_params["lr"],
        result.best_params["batch_size"],
        result.best_params["truncation"],
    )
    assert result.best_value == max(float(r["value"]) for r in rows)
    assert best.calibrate and best.baseline, "trials skip calibration/baseline; the saved config must not"

    for name in (
        "optimization_history.png",
        "param_importances.png",
        "tune_config.yaml",
        "search_space.yaml",
        "study.db",
    ):
        assert (study / name).stat().st_size > 0, name
    assert TuneConfig.from_yaml(study / "tune_config.yaml").n_trials == 4
    assert load_space(study / "search_space.yaml").params.keys() == {"lr", "batch_size", "truncation"}

    # Every trial keeps its metrics; only the best keeps model weights.
    for number in range(4):
        run = study / "trials" / f"{number:04d}"
        assert (
            (run / "metrics.json").is_file() and (run / "train_config.yaml").is_file() and (run / "train.log").is_file()
        )
        assert not (run / "checkpoint").exists()
        assert (run / "model").is_dir() == (number == result.best_number), number

    # --retrain-best: the usual run folder, with calibration and the baseline on.
    metrics = json.loads((study / "best" / "metrics.json").read_text())
    assert metrics["baseline"] is not None and metrics["config"]["lr"] == result.best_params["lr"]
    assert (study / "best" / "classification_report.md").is_file() and (
        study / "best" / "model" / "model.safetensors"
    ).is_file()
    assert result.best_run is not None and result.table.row_count == 4


def test_pruner_stops_a_poor_trial_early(tiny_model_dir, small_prepared, tmp_path):
    # val_loss, minimised: a divergent learning rate is clearly worse after one epoch.
    config = make_config(
        tiny_model_dir,
        small_prepared,
        tmp_path,
        space="lr: {type: float, low: 1.0e-6, high: 1.0, log: true}\n",
        train=dict(epochs=2),
        n_trials=3,
        metric="val_loss",
        pruner="median",
        pruner_startup_trials=2,
        pruner_warmup_epochs=0,
    )
    assert config.direction == "minimize"
    (tmp_path / "study").mkdir()
    study = optuna.create_study(storage=config.storage_url, study_name=config.study_name, direction="minimize")
    study.enqueue_trial({"lr": 1e-5})
    study.enqueue_trial({"lr": 2e-5})
    study.enqueue_trial({"lr": 0.8})  # deliberately poor
    result = tune(config, log=quiet)

    states = {t.number: t for t in storage_trials(config)}
    assert len(states) == 3
    assert states[0].state.name == states[1].state.name == "COMPLETE"
    poor = states[2]
    assert poor.state.name == "PRUNED", (
        f"intermediate values {poor.intermediate_values} vs {states[0].intermediate_values}"
    )
    assert list(poor.intermediate_values) == [1], "pruned after its first epoch, not trained to the end"
    assert result.count("PRUNED") == 1 and result.best_number in (0, 1)
    assert not (tmp_path / "study" / "trials" / "0002" / "model").exists()


def test_two_worker_processes_share_one_study(tiny_model_dir, small_prepared, tmp_path):
    config = make_config(
        tiny_model_dir, small_prepared, tmp_path, n_trials=4, workers=2, sampler="random", train=dict(max_train_rows=96)
    )
    result = tune(config, log=quiet)

    trials = storage_trials(config)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == [0, 1, 2, 3], "exactly N trials in the storage, no duplicates"
    assert {t.state.name for t in trials} == {"COMPLETE"}
    owners = {t.user_attrs["worker"] for t in trials}
    assert all(not o.endswith(f":{os.getpid()}") for o in owners), "trials ran in worker processes, not in the caller"
    assert 1 <= len(owners) <= 2
    assert [int(r["number"]) for r in read_trials_csv(config)] == [0, 1, 2, 3]
    logs = sorted((tmp_path / "study" / "logs").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]
    ran = sum(int(p.read_text().split("done: ")[1].split(" trial")[0]) for p in logs)
    assert ran == 4
    assert result.count("COMPLETE") == 4


def test_interrupted_study_resumes_and_reports_the_lost_trial(tiny_model_dir, small_prepared, tmp_path):
    config = make_config(tiny_model_dir, small_prepared, tmp_path, n_trials=1)
    tune(config, log=quiet)

    # Three trials left RUNNING: one by a dangling ask(), one by a worker process that died,
    # one by a worker that is still alive (this process) and must be left alone.
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    study.ask()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from ticket_triage.tuning.study import HOST

    study.ask().set_user_attr("worker", f"{HOST}:{dead.pid}")
    study.ask().set_user_attr("worker", f"{HOST}:{os.getpid()}")

    messages: list[str] = []
    resumed = make_config(tiny_model_dir, small_prepared, tmp_path, n_trials=5)
    result = tune(resumed, log=messages.append)

    assert result.interrupted == [1, 2]
    assert any("trial 1 was interrupted" in m for m in messages) and any(
        "trial 2 was interrupted" in m for m in messages
    )
    states = {t.number: t.state.name for t in storage_trials(resumed)}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "RUNNING", 4: "COMPLETE"}
    rows = {int(r["number"]): r for r in read_trials_csv(resumed)}
    assert "interrupted" in rows[1]["error"] and rows[4]["state"] == "COMPLETE"


@pytest.mark.parametrize(
    "space, entry, message",
    [
        ("learning_rate: {type: float, low: 1.0e-5, high: 1.0e-4}\n", "learning_rate", "not a training setting"),
        ("lr: {type: float, low: 1.0e-3, high: 1.0e-5}\n", "lr", "above high"),
        ("truncation: {type: categorical, choices: []}\n", "truncation", "non-empty"),
        ("dropout: {type: beta, low: 0.0, high: 0.2}\n", "dropout", "unknown distribution type"),
        ("lr: {type: float, low: 0.0, high: 1.0e-4, log: true}\n", "lr", "low > 0"),
        ("max_length: {type: categorical, choices: [128, 1024]}\n", "max_length", "1024"),
        (
            "epochs: {type: int, low: 1, high: 3}\ndevice: {type: categorical, choices: [cpu]}\n",
            "device",
            "fixed option",
        ),
    ],
)
def test_invalid_space_is_rejected_with_the_entry_named(tmp_path, space, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    with pytest.raises(ConfigError, match=message) as exc:
        load_space(path)
    assert f"'{entry}'" in str(exc.value)


def test_default_space_is_valid_and_shipped():
    space = load_space(None)
    assert {
        "lr",
        "batch_size",
        "epochs",
        "warmup_ratio",
        "weight_decay",
        "dropout",
        "max_length",
        "truncation",
        "class_weights",
        "layer_lr_decay",
    } <= set(space.params)
    assert space.params["lr"].log


def test_invalid_tune_settings(tiny_model_dir, small_prepared, tmp_path):
    with pytest.raises(ConfigError, match="sampler"):
        make_config(tiny_model_dir, small_prepared, tmp_path, sampler="bayes")
    with pytest.raises(ConfigError, match="unknown training setting 'epoks'"):
        make_config(tiny_model_dir, small_prepared, tmp_path, train=dict(epoks=2))
    with pytest.raises(ConfigError, match="grid sampler needs `step`"):
        make_config(tiny_model_dir, small_prepared, tmp_path, sampler="grid")
    with pytest.raises(ConfigError, match="does not exist"):
        TuneConfig(data_dir=str(tmp_path / "nope"), out_dir=str(tmp_path / "s"))


def test_cli_grid_search(tiny_model_dir, small_prepared, tmp_path, capsys):
    from ticket_triage.cli import main

    space = tmp_path / "grid.yaml"
    space.write_text("batch_size: {type: categorical, choices: [16, 32]}\n")
    out = tmp_path / "study"
    args = [
        "tune",
        "--data",
        str(small_prepared),
        "--out",
        str(out),
        "--space",
        str(space),
        "--n-trials",
        "5",
        "--sampler",
        "grid",
        "--pruner",
        "none",
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--precision",
        "fp32",
        "--threads",
        "1",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    err = capsys.readouterr().err
    assert "grid has only 2 combinations" in err and "best trial" in err
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert sorted(json.loads(r["params"])["batch_size"] for r in rows) == [16, 32], (
        "the grid is covered, each point once"
    )
    assert yaml.safe_load((out / "best_params.yaml").read_text())["max_length"] == 32


def test_cli_bad_space_is_one_line(small_prepared, tmp_path, capsys):
    from ticket_triage.cli import main

    space = tmp_path / "bad.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-5}\n")
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--data", str(small_prepared), "--out", str(tmp_path / "study"), "--space", str(space)])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "'lr'" in err and "above high" in err
    assert not (tmp_path / "study").exists()


def test_timeout_stops_new_trials_and_the_study_continues_later(tiny_model_dir, small_prepared, tmp_path):
    from ticket_triage.errors import TicketTriageError

    messages: list[str] = []
    config = make_config(tiny_model_dir, small_prepared, tmp_path, n_trials=2, timeout=1e-6)
    with pytest.raises(TicketTriageError, match="no trial .* completed"):
        tune(config, log=messages.append)
    assert any("time is up: 2 trial(s) not started" in m for m in messages)
    assert [r["state"] for r in read_trials_csv(config)] == ["WAITING", "WAITING"]

    again = make_config(tiny_model_dir, small_prepared, tmp_path, n_trials=2, pruner="hyperband", train=dict(epochs=2))
    result = tune(again, log=quiet)
    assert [t.state.name for t in storage_trials(again)] == ["COMPLETE", "COMPLETE"]
    assert result.best_config_path.is_file()


def test_a_fixed_option_takes_its_setting_out_of_the_space_unless_the_space_wins(small_prepared, tmp_path):
    """`triage tune --epochs 1` with the shipped space (epochs 2 to 4) used to run 2-4 epochs."""
    fixed = TuneConfig(
        data_dir=str(small_prepared), out_dir=str(tmp_path / "a"), train={"epochs": 1, "lr": 1e-3}, fixed=["epochs"]
    )
    assert "epochs" not in fixed.search_space().params and "lr" in fixed.search_space().params, (
        "only options are fixed, not --config"
    )
    assert fixed.fixed_in_space() == ["epochs"]
    wins = TuneConfig(
        data_dir=str(small_prepared),
        out_dir=str(tmp_path / "b"),
        train={"epochs": 1},
        fixed=["epochs"],
        space_wins=True,
    )
    assert "epochs" in wins.search_space().params
    space = tmp_path / "one.yaml"
    space.write_text("epochs: {type: int, low: 2, high: 4}\n")
    with pytest.raises(ConfigError, match="every setting of search space .* is fixed by an option.*--space-wins"):
        TuneConfig(
            data_dir=str(small_prepared),
            out_dir=str(tmp_path / "c"),
            space=str(space),
            train={"epochs": 1},
            fixed=["epochs"],
        )


def test_cli_tune_epochs_option_wins_over_the_shipped_space(tiny_model_dir, small_prepared, tmp_path, capsys):
    from ticket_triage.cli import main

    out = tmp_path / "study"
    args = [
        "tune",
        "--data",
        str(small_prepared),
        "--out",
        str(out),
        "--n-trials",
        "1",
        "--pruner",
        "none",
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--batch-size",
        "32",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--no-baseline",
        "--no-calibrate",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "fixed by an option and named by the search space: batch_size, epochs, max_length; taken out" in err
    (row,) = list(csv.DictReader((out / "trials.csv").open()))
    params = json.loads(row["params"])
    assert not {"epochs", "max_length", "batch_size"} & set(params) and "lr" in params
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert (best["epochs"], best["max_length"], best["batch_size"]) == (1, 32, 32)


def test_cli_tune_bad_config_yaml_is_one_line(small_prepared, tmp_path, capsys):
    from _model_support import cli_error

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\nlr: 2\n")
    err = cli_error(
        capsys, ["tune", "--data", str(small_prepared), "--out", str(tmp_path / "study"), "--config", str(bad)]
    )
    assert f"config file {bad} is not valid YAML" in err
    bad.write_text("epochz: 1\n")
    assert "unknown training setting 'epochz'" in cli_error(
        capsys, ["tune", "--data", str(small_prepared), "--out", str(tmp_path / "study"), "--config", str(bad)]
    )
