"""tune(): a hyperparameter study over `train_model`, start to finish.

    validate -> open or resume the study -> mark interrupted trials FAIL -> queue up to N
    trials -> run them (in this process, or K worker processes) -> trials.csv,
    best_params.yaml, plots -> optionally retrain the best settings into <out>/best

The study folder:
    study.db                 the Optuna storage (unless --storage points elsewhere)
    tune_config.yaml         the full TuneConfig;  search_space.yaml: the space it searched
    trials/NNNN/             each trial's run folder: train_config.yaml, metrics.json, reports,
                             train.log. Model weights are kept for the best completed trial only.
    trials.csv               number, state, value, params, duration_s, epochs_reported, error
    best_params.yaml         full TrainConfig of the best trial (`triage train --config` reads it)
    optimization_history.png, param_importances.png
    logs/worker-K.log        output of each worker process (with --workers > 1)
    best/                    with --retrain-best: the usual run folder of the final model
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, TicketTriageError
from . import outputs
from .config import TuneConfig
from .study import effective_n_trials, open_storage, open_study, recover_interrupted, run_worker, top_up


@dataclass
class TuneResult:
    out_dir: Path
    study_name: str
    storage: str
    n_trials: int
    metric: str
    direction: str
    trials: list[dict[str, Any]]  # rows of trials.csv
    interrupted: list[int]  # trials found RUNNING without a live worker, marked FAIL
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_config_path: Path | None = None
    plots: list[Path] = field(default_factory=list)
    best_run: Any = None  # TrainResult of --retrain-best
    table: Any = None  # rich Table summarising the trials

    def count(self, state: str) -> int:
        return sum(1 for row in self.trials if row["state"] == state)


def tune(config: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    _quiet_optuna()
    from optuna.study import StudyDirection

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # -- the study: new or resumed -------------------------------------------------------------
    storage = open_storage(config)
    study = open_study(config, storage)
    wanted = StudyDirection.MAXIMIZE if config.direction == "maximize" else StudyDirection.MINIMIZE
    if study.direction != wanted:
        raise ConfigError(
            f"study {config.study_name!r} in {config.storage_url} was created to {study.direction.name.lower()}, not {config.direction}; use another --study name"
        )
    config.save(out_dir / "tune_config.yaml")
    config.search_space().save(out_dir / "search_space.yaml")
    overlap = config.fixed_in_space()
    if overlap:
        rule = (
            "the search space overrides them (--space-wins)"
            if config.space_wins
            else "taken out of the search space: the options win"
        )
        log(f"fixed by an option and named by the search space: {', '.join(overlap)}; {rule}")
    n_trials = effective_n_trials(config)
    if n_trials < config.n_trials:
        log(f"the grid has only {n_trials} combinations: running {n_trials} trials, not {config.n_trials}")

    finished_before = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if finished_before:
        log(f"resuming study {config.study_name!r}: {len(finished_before)} trial(s) already finished")
    interrupted = recover_interrupted(config, study, storage, log)
    top_up(study, n_trials)
    to_run = sum(1 for t in study.get_trials(deepcopy=False) if t.number < n_trials and t.state.name == "WAITING")
    log(
        f"study {config.study_name!r}: {to_run} trial(s) to run of {n_trials}, {config.workers} worker(s), storage {_safe_url(config.storage_url)}"
    )

    # -- run the trials ------------------------------------------------------------------------
    deadline = time.time() + config.timeout if config.timeout else None
    if to_run:
        if config.workers == 1:
            run_worker(config, 0, deadline, log)
        else:
            _run_worker_processes(config, deadline, log)

    # -- outputs -------------------------------------------------------------------------------
    study = open_study(config, storage)
    trials = outputs.study_trials(study, n_trials)
    not_started = sum(1 for t in trials if t.state.name == "WAITING")
    if not_started:
        log(f"time is up: {not_started} trial(s) not started; run the same command again to continue the study")
    outputs.write_trials_csv(out_dir / outputs.TRIALS_CSV, trials)
    result = TuneResult(
        out_dir=out_dir,
        study_name=config.study_name,
        storage=config.storage_url,
        n_trials=n_trials,
        metric=config.metric,
        direction=config.direction,
        trials=[outputs.trial_row(t) for t in trials],
        interrupted=interrupted,
        table=outputs.summary_table(trials, config.metric, config.direction),
    )
    result.plots = outputs.write_plots(out_dir, study, log)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        raise TicketTriageError(
            f"no trial of study {config.study_name!r} completed; see {out_dir / outputs.TRIALS_CSV} and the trials' train.log files"
        )
    best = (
        max(complete, key=lambda t: t.value) if config.direction == "maximize" else min(complete, key=lambda t: t.value)
    )
    result.best_number, result.best_value, result.best_params = best.number, best.value, dict(best.params)
    result.best_config_path = outputs.write_best_params(out_dir / outputs.BEST_PARAMS, config, best)
    log(
        f"{result.count('COMPLETE')} complete, {result.count('PRUNED')} pruned, {result.count('FAIL')} failed; "
        f"best trial {best.number}: {config.metric} {best.value:.4f}; settings in {result.best_config_path}"
    )

    # -- the final model -----------------------------------------------------------------------
    if config.retrain_best:
        from ..training import train_model

        best_config = outputs.best_train_config(config, best.params)
        log(f"retraining the best settings into {out_dir / 'best'}")
        result.best_run = train_model(best_config, config.data_dir, out_dir / "best", log=log)
    return result


def _run_worker_processes(config: TuneConfig, deadline: float | None, log: Callable[[str], None]) -> None:
    """K local worker processes on the shared storage; each writes logs/worker-K.log."""
    out_dir = Path(config.out_dir)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    config_path = out_dir / "tune_config.yaml"
    procs: list[tuple[int, subprocess.Popen, Any]] = []
    for index in range(config.workers):
        handle = (logs / f"worker-{index}.log").open("a")
        command = [sys.executable, "-m", "ticket_triage.tuning.worker", str(config_path), str(index)]
        if deadline is not None:
            command.append(repr(deadline))
        procs.append((index, subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT), handle))
    log(f"started {config.workers} worker processes; logs in {logs}")
    try:
        for index, proc, handle in procs:
            code = proc.wait()
            handle.close()
            if code != 0:
                log(f"worker {index} exited with code {code}; see {logs / f'worker-{index}.log'}")
    except KeyboardInterrupt:
        # Each worker marks its running trial FAIL on SIGINT; the next `tune` resumes the rest.
        for _index, proc, _handle in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _index, proc, handle in procs:
            proc.wait()
            handle.close()
        raise


def _quiet_optuna() -> None:
    try:
        import optuna
    except ImportError:
        raise TicketTriageError("hyperparameter search needs Optuna: pip install 'ticket-triage[tune]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _safe_url(url: str) -> str:
    """The storage URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
