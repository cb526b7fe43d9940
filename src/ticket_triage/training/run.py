"""`train_model`: a whole training run, the loop (loop.py) and then its finish (finish.py)."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from .checkpoint import CHECKPOINT_DIR
from .config import TrainConfig
from .distributed import shutdown
from .finish import TrainResult, finish_run
from .loop import train_loop
from .targets import SoftTargets


def train_model(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    soft_targets: SoftTargets | None = None,
) -> TrainResult:
    """Fine-tune, keep the best epoch's model folder, and report on the test split (loop.py, finish.py).

    `on_epoch_end(record)` may raise to end the run (the tuner's pruner raises optuna.TrialPruned).
    With `soft_targets` (from `triage distill`) the loss also pulls the model towards a teacher's
    probabilities, and the teacher's unlabelled texts join the training rows (targets.py)."""
    with ExitStack() as run_scope:  # process-wide settings made for this run are undone when it ends
        run = train_loop(
            config,
            data_dir,
            out_dir,
            run_scope=run_scope,
            resume=resume,
            on_epoch_end=on_epoch_end,
            on_step=on_step,
            log=log,
            progress=progress,
            soft_targets=soft_targets,
        )
        if not run.ctx.is_main:  # rank 0 alone scores, reports and writes
            shutdown(run.ctx)
            return TrainResult(
                out_dir=run.out_dir,
                model_dir=run.model_dir,
                history=run.state.history,
                test={},
                best_epoch=run.state.best_epoch,
            )
        result = finish_run(run, log=log)
        shutil.rmtree(run.out_dir / CHECKPOINT_DIR, ignore_errors=True)
        shutdown(run.ctx)
        return result
