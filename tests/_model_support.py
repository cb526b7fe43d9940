"""Helpers shared by test modules (tests import this, never each other): a small model folder
from the tiny BERT, sample texts, and running the CLI."""

from __future__ import annotations

import pytest

from ticket_triage.taxonomy import load_taxonomy

TEXTS = [
    "my credit report shows a debt i do not owe",
    "loan",
    "the debt collector called about my mortgage payment and the late fee on my escrow account " * 3,
    "bank charge on checking",
    "student loan interest",
    "i was charged a fee for a money transfer to my savings account that was not mine",
    "card",
]


def make_model_folder(dest, tiny_model_dir, pooling="cls", temperature=1.0, max_length=48, **meta_fields):
    from ticket_triage.modeling import ModelMeta, build_model, load_tokenizer, save_model_folder

    taxonomy = load_taxonomy("cfpb-6")
    labels = list(taxonomy.categories)
    import torch

    torch.manual_seed(1)
    model = build_model(str(tiny_model_dir), labels, pooling=pooling)
    with torch.no_grad():  # spread the random head's logits so the classes differ
        head = model.classifier if pooling == "mean" else model.classifier
        head.weight.mul_(40)
    meta = ModelMeta(labels=labels, max_length=max_length, pooling=pooling, temperature=temperature, **meta_fields)
    return save_model_folder(model, load_tokenizer(str(tiny_model_dir)), dest, meta, taxonomy)


def cli_ok(argv):
    """Run the CLI; Typer's standalone mode ends a successful command with SystemExit(0)."""
    from ticket_triage.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), f"exit {exc.code}"


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of `triage argv...` run in this process."""
    from ticket_triage.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_error(capsys, argv):
    from ticket_triage.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def tiny_train_config(model_dir, **overrides):
    """A TrainConfig for a tiny random model: fp32, one thread, no calibration or baseline."""
    from ticket_triage.training import TrainConfig

    settings = dict(
        model=str(model_dir),
        epochs=1,
        batch_size=16,
        max_length=48,
        lr=1e-3,
        seed=7,
        precision="fp32",
        threads=1,
        calibrate=False,
        baseline=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)
