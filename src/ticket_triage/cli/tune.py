"""`triage tune`: hyperparameter search over `triage train` (Optuna), with pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from .options import train_options

SPACE_WINS_HELP = (
    "A training option that the search space also names is fixed, and taken out of the space (the option wins); "
    "with --space-wins the space searches it anyway, as it does for settings from --config."
)


@app.command()
@train_options()
def tune(
    data: Annotated[Path, typer.Option("--data", help="Folder from `triage data prepare` (train/val/test.parquet).")],
    out: Annotated[
        Path, typer.Option("--out", help="Study folder: study.db, trials/, trials.csv, best_params.yaml, plots.")
    ],
    space: Annotated[
        Optional[Path],
        typer.Option("--space", help="Search-space YAML. Default: the shipped space for the embedded model."),
    ] = None,
    n_trials: Annotated[
        int, typer.Option("--n-trials", help="Total trials in the study, across all workers and resumed runs.")
    ] = 20,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", help="Seconds; no new trial starts after this (running ones finish)."),
    ] = None,
    sampler: Annotated[
        str, typer.Option("--sampler", help="tpe | random | grid (grid needs categorical or stepped entries).")
    ] = "tpe",
    pruner: Annotated[
        str, typer.Option("--pruner", help="median | hyperband | none: stop poor trials after an epoch.")
    ] = "median",
    pruner_startup_trials: Annotated[
        int, typer.Option("--pruner-startup-trials", help="median: completed trials before pruning starts.")
    ] = 3,
    pruner_warmup_epochs: Annotated[
        int, typer.Option("--pruner-warmup-epochs", help="median: epochs every trial gets before it may be pruned.")
    ] = 0,
    storage: Annotated[
        Optional[str],
        typer.Option(
            "--storage", help="Optuna storage URL (e.g. postgresql://user:pw@host/db). Default: sqlite:///OUT/study.db."
        ),
    ] = None,
    study: Annotated[str, typer.Option("--study", help="Study name inside the storage.")] = "triage",
    metric: Annotated[
        str, typer.Option("--metric", help="val_macro_f1 | val_accuracy | val_loss, read after every epoch.")
    ] = "val_macro_f1",
    direction: Annotated[
        Optional[str], typer.Option("--direction", help="maximize | minimize. Default: what suits the metric.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Local worker processes sharing the storage.")] = 1,
    retrain_best: Annotated[
        bool,
        typer.Option(
            "--retrain-best", help="Train the best settings into OUT/best, with calibration and the baseline."
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--sampler-seed", help="Sampler seed (trials keep the training --seed).")] = 42,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="TrainConfig YAML with the fixed settings of every trial (the search space overrides what it names).",
        ),
    ] = None,
    space_wins: Annotated[bool, typer.Option("--space-wins", help=SPACE_WINS_HELP)] = False,
    train_overrides: dict | None = None,
) -> None:
    """Search hyperparameters: many short `train` runs, poor ones pruned early; best settings saved.

    Training options (--epochs, --model, ...) are fixed for every trial."""
    from ..training import TrainConfig
    from ..tuning import TuneConfig
    from ..tuning import tune as run_tune

    given = train_overrides or {}
    train = {**(TrainConfig.read_yaml(config) if config else {}), **given}
    tune_config = TuneConfig(
        data_dir=str(data),
        out_dir=str(out),
        space=str(space) if space else None,
        n_trials=n_trials,
        timeout=timeout,
        sampler=sampler,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        pruner_warmup_epochs=pruner_warmup_epochs,
        storage=storage,
        study_name=study,
        metric=metric,
        direction=direction,
        workers=workers,
        retrain_best=retrain_best,
        seed=seed,
        train=train,
        fixed=sorted(given),
        space_wins=space_wins,
    )
    console = _console()
    result = run_tune(tune_config, log=console.print)
    console.print(result.table)
    if result.interrupted:
        console.print(f"[yellow]interrupted trials marked FAIL[/]: {', '.join(map(str, result.interrupted))}")
    console.print(
        f"[green]done[/]: best trial {result.best_number} ({result.metric} {result.best_value:.4f}); settings in {result.best_config_path}"
    )
    if result.best_run is not None:
        console.print(
            f"final model in {result.best_run.model_dir}, report in {out / 'best' / 'classification_report.md'}"
        )


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)
