"""The training options of `triage train`, `tune` and `distill`: one declaration, TrainConfig's fields."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ticket_triage.training import TrainConfig


def _options(command_name: str) -> dict[str, object]:
    """{option flag: click option} of a registered command."""
    import typer.main

    from ticket_triage.cli import app

    group = typer.main.get_group(app)
    return {flag: param for param in group.commands[command_name].params for flag in param.opts}


@pytest.mark.parametrize("command, renamed", [("train", {}), ("tune", {}), ("distill", {"model": "--student"})])
def test_every_train_setting_is_an_option_with_its_fields_help_and_default(command, renamed):
    options = _options(command)
    for f in fields(TrainConfig):
        flag = renamed.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in options, f"{command} lacks {flag}"
        option = options[flag]
        assert option.default is None, "None: not given, so a --config or a checkpoint can supply it"
        assert option.help.startswith(f.metadata["help"])
    assert "Default: 3." in options["--epochs"].help and "Default: on." in options["--deterministic"].help
    assert (
        "--no-baseline" in options["--baseline"].secondary_opts
        and "--no-freeze-encoder" in options["--freeze-encoder"].secondary_opts
    )


def test_train_cli_passes_only_the_options_given(small_prepared, tmp_path, monkeypatch):
    from _model_support import cli_ok

    import ticket_triage.training as training
    from ticket_triage.training import TrainResult

    seen = []
    monkeypatch.setattr(
        training,
        "train_model",
        lambda cfg, data, out, **kw: seen.append(cfg) or TrainResult(out, out / "model", [], {}, 0),
    )
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 5\nlr: 0.001\n")
    cli_ok(
        [
            "train",
            "--data",
            str(small_prepared),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(yaml_file),
            "--lr",
            "0.002",
            "--no-baseline",
        ]
    )
    assert (seen[0].epochs, seen[0].lr, seen[0].baseline, seen[0].batch_size) == (5, 0.002, False, 16)


def test_distill_takes_the_student_and_the_teacher_device_from_the_shared_options(
    small_prepared, tmp_path, monkeypatch
):
    from _model_support import cli_ok

    import ticket_triage.distill as distill

    seen = []
    monkeypatch.setattr(distill, "distill_model", lambda cfg, train_cfg, data, out, **kw: seen.append((cfg, train_cfg)))
    cli_ok(
        [
            "distill",
            "--teacher",
            str(tmp_path),
            "--data",
            str(small_prepared),
            "--out",
            str(tmp_path / "s"),
            "--student",
            "mpnet",
            "--device",
            "cpu",
            "--max-chunks",
            "3",
        ]
    )
    cfg, train_cfg = seen[0]
    assert (train_cfg.model, train_cfg.device, train_cfg.max_chunks, cfg.teacher_device) == ("mpnet", "cpu", 3, "cpu")
