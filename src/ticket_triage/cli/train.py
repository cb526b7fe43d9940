"""`triage train`, `triage evaluate`, `triage baseline`, `triage demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from .options import train_config_from, train_options


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


RESUME_HELP = (
    "Continue an interrupted run in --out from its last checkpoint, with the run's own settings (stored in the checkpoint): "
    "options that would change what it learns are refused; --device, --threads, --eval-batch-size, --checkpoint-every, "
    "--mlflow, --baseline and --calibrate may differ."
)


@app.command()
@train_options()
def train(
    data: Annotated[Path, typer.Option("--data", help="Folder from `triage data prepare` (train/val/test.parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (model/, metrics, plots).")],
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML file of training settings; options given here override it.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help="Train with N local processes (DistributedDataParallel via torchrun): one per GPU, or CPU processes with gloo.",
        ),
    ] = 1,
    train_overrides: dict | None = None,
) -> None:
    """Fine-tune a transformer classifier on prepared splits and report on the test split.

    Also runs under torchrun: `torchrun --nproc-per-node N -m ticket_triage train ...`.
    """
    import sys

    from ..training import train_model
    from ..training.distributed import launch_local, launched_by_torchrun

    if nproc > 1 and not launched_by_torchrun():
        raise typer.Exit(launch_local(nproc, sys.argv[1:]))

    cfg = train_config_from(config, train_overrides or {}, resume_from=out if resume else None)
    console = _console()
    result = train_model(cfg, data, out, resume=resume, log=console.print)
    console.print(f"[green]done[/]: model in {result.model_dir}, report in {out / 'classification_report.md'}")


@app.command()
def evaluate(
    model: Annotated[
        Path,
        typer.Option("--model", help="Model folder written by `triage train` (its model/), or an ONNX export of one."),
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Labelled file: a prepared split (.parquet) or a raw CFPB-format file.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for metrics.json, classification_report.md, confusion_matrix.png.")
    ],
    batch_size: Annotated[int, typer.Option(help="Texts per inference batch.")] = 64,
    text_column: Annotated[Optional[str], typer.Option(help="Text column, if not the CFPB's or `text`.")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Label column, if not `Product` or `label`.")] = None,
    backend: Annotated[
        str, typer.Option(help="auto | torch | torch-bf16 | onnx | onnx-fp32 | onnx-int8, as for `triage predict`.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="Where PyTorch runs: auto | cpu | cuda | cuda:N | mps.")] = "auto",
) -> None:
    """Score a trained model on any labelled file, with the same report as training (and by source and year)."""
    from ..evaluation.evaluate import evaluate_model

    metrics = evaluate_model(
        model,
        data,
        out,
        batch_size=batch_size,
        text_column=text_column,
        label_column=label_column,
        device=device,
        backend=backend,
    )
    _console().print(
        f"macro-F1 {metrics['macro_f1']:.4f}, accuracy {metrics['accuracy']:.4f} on {metrics['n']} rows; report in {out}"
    )


@app.command()
def baseline(
    data: Annotated[Path, typer.Option("--data", help="Folder from `triage data prepare`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the baseline's report.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """TF-IDF (word 1-2 grams) + linear SVM on the same splits, with the same report."""
    from ..evaluation.evaluate import baseline_on_splits

    metrics = baseline_on_splits(data, out, seed)
    _console().print(
        f"baseline test macro-F1 {metrics['macro_f1']:.4f}, accuracy {metrics['accuracy']:.4f}; report in {out}"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the prepared data and the run.")] = Path("runs/demo"),
    input: Annotated[
        Optional[list[Path]],
        typer.Option("--input", help="CFPB-format file, repeatable. Default: both bundled labelled files."),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Train as long as accuracy needs (slower) instead of the 20-minute profile.")
    ] = False,
    model: Annotated[
        Optional[str],
        typer.Option(
            help="Pre-trained encoder: minilm, mpnet (see `triage models list`), a folder or a hub id (default: minilm, the embedded all-MiniLM-L6-v2)."
        ),
    ] = None,
) -> None:
    """The main job: prepare the bundled data, fine-tune, compare with the baseline, report."""
    from ..demo import run_demo

    run_demo(out, input_paths=input, full=full, model=model, log=_console().print)
