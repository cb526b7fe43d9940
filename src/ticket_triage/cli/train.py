"""`triage train`, `triage evaluate`, `triage baseline`, `triage demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Folder from `triage data prepare` (train/val/test.parquet)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (model/, metrics, plots)."),
    model: Optional[str] = typer.Option(None, help="Pre-trained encoder: minilm or mpnet (see `triage models list`), a local Hugging Face folder or a hub id. Default: minilm, the embedded all-MiniLM-L6-v2."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training settings; options given here override it."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (early stopping may end sooner). [default: 3]"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per device. [default: 16]"),
    grad_accum: Optional[int] = typer.Option(None, help="Micro-batches per optimizer step. [default: 1]"),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (AdamW, linear warm-up then decay). [default: 8e-5]"),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (not on biases/LayerNorm). [default: 0.01]"),
    layer_lr_decay: Optional[float] = typer.Option(None, help="Layer-wise lr decay: each layer down from the head learns this much slower (1: off). [default: 1]"),
    warmup_ratio: Optional[float] = typer.Option(None, help="Share of steps spent warming up. [default: 0.1]"),
    dropout: Optional[float] = typer.Option(None, help="Dropout for the encoder and head. [default: the model's own]"),
    max_length: Optional[int] = typer.Option(None, help="Tokens per text, at most 512. [default: 256]"),
    truncation: Optional[str] = typer.Option(None, help="With --long-text truncate: head | tail | head+tail. [default: head+tail]"),
    long_text: Optional[str] = typer.Option(None, help="truncate: read --max-length tokens of each text; chunks: read it whole, in overlapping windows of --max-length tokens whose logits are pooled per text (in training and every scorer). [default: truncate]"),
    chunk_overlap: Optional[float] = typer.Option(None, help="With --long-text chunks: share of a window repeated in the next, 0 to 0.9. [default: 0.25]"),
    max_chunks: Optional[int] = typer.Option(None, help="With --long-text chunks: windows per text at most; a longer text gets this many spread evenly over it, first and last kept. A batch runs up to --batch-size x this many windows. [default: 8]"),
    chunk_pool: Optional[str] = typer.Option(None, help="With --long-text chunks: mean | max | attention (a window's weight: softmax over its text's windows of its top log-probability; no extra weights). [default: mean]"),
    class_weights: Optional[str] = typer.Option(None, help="none | balanced (for imbalanced data). [default: none]"),
    freeze_encoder: Optional[bool] = typer.Option(None, "--freeze-encoder/--no-freeze-encoder", help="Train only a head on mean-pooled token outputs."),
    seed: Optional[int] = typer.Option(None, help="Random seed. [default: 42]"),
    max_train_rows: Optional[int] = typer.Option(None, help="Train on a stratified subset of this many rows."),
    patience: Optional[int] = typer.Option(None, help="Early-stopping patience in epochs. [default: 2]"),
    precision: Optional[str] = typer.Option(None, help="auto | bf16 | fp16 | fp32. [default: auto]"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps. [default: auto]"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="On a GPU: deterministic kernels, so the same seed gives the same metrics (slower). CPU runs repeat either way. [default: on]"),
    group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length", help="Batch texts of similar length together (less padding). [default: on]"),
    checkpoint_every: Optional[int] = typer.Option(None, help="Optimizer steps between resumable checkpoints. [default: 200]"),
    ensemble: Optional[str] = typer.Option(None, "--ensemble", help="none | tfidf: also fit a TF-IDF linear model and mix its probabilities in, where that beats both on validation. [default: none]"),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the TF-IDF + SVM baseline in the report."),
    mlflow: bool = typer.Option(False, "--mlflow", help="Log to MLflow (also on when MLFLOW_TRACKING_URI is set)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last checkpoint."),
    lr_scaling: Optional[str] = typer.Option(None, help="With several processes: none | linear | sqrt scaling of --lr. [default: none]"),
    nproc: int = typer.Option(1, "--nproc", help="Train with N local processes (DistributedDataParallel via torchrun): one per GPU, or CPU processes with gloo."),
) -> None:
    """Fine-tune a transformer classifier on prepared splits and report on the test split.

    Also runs under torchrun: `torchrun --nproc-per-node N -m ticket_triage train ...`.
    """
    import sys

    from ..training import TrainConfig, train_model
    from ..training.distributed import launch_local, launched_by_torchrun

    if nproc > 1 and not launched_by_torchrun():
        raise typer.Exit(launch_local(nproc, _without_nproc(sys.argv[1:])))

    overrides = {
        "model": model, "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
        "weight_decay": weight_decay, "layer_lr_decay": layer_lr_decay, "warmup_ratio": warmup_ratio, "dropout": dropout, "max_length": max_length,
        "truncation": truncation, "long_text": long_text, "chunk_overlap": chunk_overlap, "max_chunks": max_chunks, "chunk_pool": chunk_pool,
        "class_weights": class_weights, "freeze_encoder": freeze_encoder, "seed": seed,
        "max_train_rows": max_train_rows, "patience": patience, "precision": precision, "device": device,
        "threads": threads, "deterministic": deterministic, "group_by_length": group_by_length, "checkpoint_every": checkpoint_every, "mlflow": mlflow or None,
        "baseline": False if no_baseline else None, "lr_scaling": lr_scaling, "ensemble": ensemble,
    }
    cfg = TrainConfig.from_yaml(config, **overrides) if config else TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    console = _console()
    result = train_model(cfg, data, out, resume=resume, log=console.print)
    console.print(f"[green]done[/]: model in {result.model_dir}, report in {out / 'classification_report.md'}")


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Model folder written by `triage train` (its model/)."),
    data: Path = typer.Option(..., "--data", help="Labelled file: a prepared split (.parquet) or a raw CFPB-format file."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, classification_report.md, confusion_matrix.png."),
    batch_size: int = typer.Option(64, help="Texts per inference batch."),
    text_column: Optional[str] = typer.Option(None, help="Text column, if not the CFPB's or `text`."),
    label_column: Optional[str] = typer.Option(None, help="Label column, if not `Product` or `label`."),
    backend: str = typer.Option("auto", help="auto | torch | torch-bf16 | onnx | onnx-fp32 | onnx-int8, as for `triage predict`."),
    device: str = typer.Option("auto", help="Where PyTorch runs: auto | cpu | cuda | cuda:N | mps."),
) -> None:
    """Score a trained model on any labelled file, with the same report as training (and by source and year)."""
    from ..evaluation.evaluate import evaluate_model

    metrics = evaluate_model(model, data, out, batch_size=batch_size, text_column=text_column, label_column=label_column, device=device, backend=backend)
    _console().print(f"macro-F1 {metrics['macro_f1']:.4f}, accuracy {metrics['accuracy']:.4f} on {metrics['n']} rows; report in {out}")


@app.command()
def baseline(
    data: Path = typer.Option(..., "--data", help="Folder from `triage data prepare`."),
    out: Path = typer.Option(..., "--out", help="Folder for the baseline's report."),
    seed: int = typer.Option(42, help="Random seed."),
) -> None:
    """TF-IDF (word 1-2 grams) + linear SVM on the same splits, with the same report."""
    from ..evaluation.evaluate import baseline_on_splits

    metrics = baseline_on_splits(data, out, seed)
    _console().print(f"baseline test macro-F1 {metrics['macro_f1']:.4f}, accuracy {metrics['accuracy']:.4f}; report in {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the prepared data and the run."),
    input: Optional[list[Path]] = typer.Option(None, "--input", help="CFPB-format file, repeatable. Default: both bundled labelled files."),
    full: bool = typer.Option(False, "--full", help="Train as long as accuracy needs (slower) instead of the 20-minute profile."),
    model: Optional[str] = typer.Option(None, help="Pre-trained encoder: minilm, mpnet (see `triage models list`), a folder or a hub id (default: minilm, the embedded all-MiniLM-L6-v2)."),
) -> None:
    """The main job: prepare the bundled data, fine-tune, compare with the baseline, report."""
    from ..demo import run_demo

    run_demo(out, input_paths=input, full=full, model=model, log=_console().print)
