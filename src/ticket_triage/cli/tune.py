"""`triage tune`: hyperparameter search over `triage train` (Optuna), with pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command()
def tune(
    data: Path = typer.Option(..., "--data", help="Folder from `triage data prepare` (train/val/test.parquet)."),
    out: Path = typer.Option(..., "--out", help="Study folder: study.db, trials/, trials.csv, best_params.yaml, plots."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search-space YAML. Default: the shipped space for the embedded model."),
    n_trials: int = typer.Option(20, "--n-trials", help="Total trials in the study, across all workers and resumed runs."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds; no new trial starts after this (running ones finish)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | random | grid (grid needs categorical or stepped entries)."),
    pruner: str = typer.Option("median", "--pruner", help="median | hyperband | none: stop poor trials after an epoch."),
    pruner_startup_trials: int = typer.Option(3, "--pruner-startup-trials", help="median: completed trials before pruning starts."),
    pruner_warmup_epochs: int = typer.Option(0, "--pruner-warmup-epochs", help="median: epochs every trial gets before it may be pruned."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (e.g. postgresql://user:pw@host/db). Default: sqlite:///OUT/study.db."),
    study: str = typer.Option("triage", "--study", help="Study name inside the storage."),
    metric: str = typer.Option("val_macro_f1", "--metric", help="val_macro_f1 | val_accuracy | val_loss, read after every epoch."),
    direction: Optional[str] = typer.Option(None, "--direction", help="maximize | minimize. Default: what suits the metric."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes sharing the storage."),
    retrain_best: bool = typer.Option(False, "--retrain-best", help="Train the best settings into OUT/best, with calibration and the baseline."),
    seed: int = typer.Option(42, "--sampler-seed", help="Sampler seed (trials keep the training --seed)."),
    # Fixed for every trial (the search space overrides what it names):
    config: Optional[Path] = typer.Option(None, "--config", help="TrainConfig YAML with the fixed settings of every trial."),
    model: Optional[str] = typer.Option(None, help="Pre-trained encoder: minilm or mpnet (see `triage models list`), a local folder or a hub id. Default: minilm, the embedded all-MiniLM-L6-v2."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per trial (unless the space tunes epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (unless tuned)."),
    grad_accum: Optional[int] = typer.Option(None, help="Micro-batches per optimizer step."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (unless tuned)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (unless tuned)."),
    warmup_ratio: Optional[float] = typer.Option(None, help="Warm-up share of steps (unless tuned)."),
    dropout: Optional[float] = typer.Option(None, help="Dropout (unless tuned)."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per text (unless tuned)."),
    truncation: Optional[str] = typer.Option(None, help="head | tail | head+tail (unless tuned)."),
    class_weights: Optional[str] = typer.Option(None, help="none | balanced (unless tuned)."),
    freeze_encoder: Optional[bool] = typer.Option(None, "--freeze-encoder/--no-freeze-encoder", help="Train only a head on mean-pooled outputs."),
    train_seed: Optional[int] = typer.Option(None, "--seed", help="Training seed of every trial. [default: 42]"),
    max_train_rows: Optional[int] = typer.Option(None, help="Stratified subset of the training split per trial (faster studies)."),
    patience: Optional[int] = typer.Option(None, help="Early-stopping patience in epochs."),
    precision: Optional[str] = typer.Option(None, help="auto | bf16 | fp16 | fp32."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch, per worker."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="With --retrain-best: skip the TF-IDF + SVM baseline."),
) -> None:
    """Search hyperparameters: many short `train` runs, poor ones pruned early; best settings saved."""
    import yaml

    from ..errors import ConfigError
    from ..tuning import TuneConfig
    from ..tuning import tune as run_tune

    train: dict = {}
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist")
        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config} must be a mapping of setting: value")
        train.update(loaded)
    overrides = {
        "model": model, "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
        "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "dropout": dropout, "max_length": max_length,
        "truncation": truncation, "class_weights": class_weights, "freeze_encoder": freeze_encoder, "seed": train_seed,
        "max_train_rows": max_train_rows, "patience": patience, "precision": precision, "device": device,
        "threads": threads, "baseline": False if no_baseline else None,
    }
    train.update({k: v for k, v in overrides.items() if v is not None})
    tune_config = TuneConfig(
        data_dir=str(data), out_dir=str(out), space=str(space) if space else None, n_trials=n_trials, timeout=timeout,
        sampler=sampler, pruner=pruner, pruner_startup_trials=pruner_startup_trials, pruner_warmup_epochs=pruner_warmup_epochs,
        storage=storage, study_name=study, metric=metric, direction=direction, workers=workers,
        retrain_best=retrain_best, seed=seed, train=train,
    )
    console = _console()
    result = run_tune(tune_config, log=console.print)
    console.print(result.table)
    if result.interrupted:
        console.print(f"[yellow]interrupted trials marked FAIL[/]: {', '.join(map(str, result.interrupted))}")
    console.print(f"[green]done[/]: best trial {result.best_number} ({result.metric} {result.best_value:.4f}); settings in {result.best_config_path}")
    if result.best_run is not None:
        console.print(f"final model in {result.best_run.model_dir}, report in {out / 'best' / 'classification_report.md'}")


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)
