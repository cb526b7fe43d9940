"""Study handling: storage, the trial queue, interrupted trials, and one worker's loop.

How N stays exact with many workers (local processes or other machines on one PostgreSQL
study): every `tune` call first tops the study up to N trials by adding WAITING trials
(numbers 0..N-1), and workers only ever *claim* a WAITING trial with a number below N,
atomically (WAITING -> RUNNING succeeds for exactly one claimant). Nothing else creates
trials, so no worker can start an N+1-th. If two machines top up at the same instant, the
surplus WAITING trials get numbers >= N and are never run (a later, larger --n-trials uses
them). A study's N counts every trial it holds, FAIL included, like
`MaxTrialsCallback(n, states=None)`.

Interrupted trials: a worker records `worker = host:pid` on its trial and, while it trains,
heartbeats into the storage. On start, `tune` marks FAIL every RUNNING trial whose worker is
on this host and gone, or which no triage worker owns (e.g. a dangling `study.ask()`), and
Optuna's heartbeat check fails those whose heartbeats stopped more than `grace_period` ago
(a worker on another machine that died). Each is logged and listed in the result.
A trial without a `worker` attribute is treated as abandoned at once: a worker sets it in
the same breath as claiming the trial, so only a start on another machine within those
milliseconds could misjudge it (that worker then logs that it could not record its result).
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import TuneConfig

TRIALS_DIR = "trials"
HOST = socket.gethostname()


def trial_dir(config: TuneConfig, number: int) -> Path:
    return Path(config.out_dir) / TRIALS_DIR / f"{number:04d}"


# ---------------------------------------------------------------------------------------------
# Storage, sampler, pruner, study
# ---------------------------------------------------------------------------------------------
def open_storage(config: TuneConfig):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" in Optuna
        engine_kwargs = {"connect_args": {"timeout": 60}} if config.storage_url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(
            config.storage_url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
        )


def make_sampler(config: TuneConfig, seed: int):
    import optuna

    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":

        class _GridSampler(optuna.samplers.GridSampler):
            # Our workers run trials outside `optimize`, where `study.stop()` is refused; the
            # study is capped at the grid's size instead (see `grid_size`).
            def after_trial(self, study, trial, state, values) -> None:
                pass

        return _GridSampler(config.search_space().grid(), seed=seed)
    # constant_liar: running trials count as bad guesses, so parallel workers spread out.
    return optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, n_startup_trials=min(10, max(2, config.n_trials // 3))
    )


def grid_size(config: TuneConfig) -> int:
    size = 1
    for values in config.search_space().grid().values():
        size *= len(values)
    return size


def make_pruner(config: TuneConfig):
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        max_epochs = int(config.search_space().max_of("epochs", config.base_train_config().epochs))
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.pruner_startup_trials, n_warmup_steps=config.pruner_warmup_epochs
    )


def open_study(config: TuneConfig, storage, seed: int | None = None):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.create_study(
            storage=storage,
            study_name=config.study_name,
            direction=config.direction,
            sampler=make_sampler(config, config.seed if seed is None else seed),
            pruner=make_pruner(config),
            load_if_exists=True,
        )


def effective_n_trials(config: TuneConfig) -> int:
    return min(config.n_trials, grid_size(config)) if config.sampler == "grid" else config.n_trials


def top_up(study, n_trials: int) -> int:
    """Add WAITING trials until the study holds `n_trials`; returns how many were added."""
    from optuna.trial import TrialState, create_trial

    missing = n_trials - len(study.get_trials(deepcopy=False))
    for _ in range(max(missing, 0)):
        study.add_trial(create_trial(state=TrialState.WAITING))
    return max(missing, 0)


def claim_trial(study, storage, n_trials: int, lock_path: Path | None = None) -> int | None:
    """Atomically take the lowest-numbered WAITING trial below `n_trials`; None when none is left."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    with _claim_lock(lock_path):
        # Listed through the study, so its storage cache knows the trial we are about to run.
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        for frozen in sorted(waiting, key=lambda t: t.number):
            if frozen.number >= n_trials:
                break
            try:
                if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    storage.set_trial_user_attr(frozen._trial_id, "worker", f"{HOST}:{os.getpid()}")
                    return frozen._trial_id
            except UpdateFinishedTrialError:
                continue  # another worker took it and finished it already
    return None


@contextmanager
def _claim_lock(path: Path | None):
    """An exclusive file lock for local workers sharing a SQLite study.

    PostgreSQL's SELECT ... FOR UPDATE makes Optuna's WAITING -> RUNNING switch atomic; SQLite
    ignores FOR UPDATE, and two local workers were seen claiming the same trial. SQLite studies
    live on one machine, so a lock file beside the database serialises the claims."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_lock_path(config: TuneConfig) -> Path | None:
    if not config.storage_url.startswith("sqlite"):
        return None
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    return Path(config.out_dir) / ".claim.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(config: TuneConfig, study, storage, log: Callable[[str], None]) -> list[int]:
    """Mark FAIL the RUNNING trials nobody is working on any more; returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    running_before = {t.number: t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fail_stale_trials(study)  # heartbeats older than grace_period: a worker elsewhere died
    still_running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    gone = {t.number for t in still_running}
    failed = {
        n: i for n, i in running_before.items() if n not in gone and storage.get_trial(i).state == TrialState.FAIL
    }
    for frozen in still_running:
        owner = frozen.user_attrs.get("worker")
        host, _, pid = str(owner).rpartition(":") if owner else ("", "", "")
        orphan = owner is None or (host == HOST and pid.isdigit() and not _pid_alive(int(pid)))
        if not orphan:
            continue
        try:
            # Attributes of a finished trial are frozen: say why before marking it.
            storage.set_trial_user_attr(
                frozen._trial_id, "error", "interrupted: its worker stopped before the trial finished"
            )
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL):
                failed[frozen.number] = frozen._trial_id
        except UpdateFinishedTrialError:
            continue
    for number in sorted(failed):
        _cleanup_run(trial_dir(config, number))
        log(f"trial {number} was interrupted (left RUNNING by a worker that stopped): marked FAIL")
    return sorted(failed)


# ---------------------------------------------------------------------------------------------
# One worker: claim, train, report, tell; until no trial is left or time is up
# ---------------------------------------------------------------------------------------------
class _Heartbeat:
    """Records the trial's heartbeat every `interval` seconds while it trains."""

    def __init__(self, storage, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage, trial_id: int, interval: int) -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a busy database: the next beat will do
                pass
            if self._stop.wait(interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class WorkerStats:
    ran: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0


def run_worker(
    config: TuneConfig, worker_index: int = 0, deadline: float | None = None, log: Callable[[str], None] = print
) -> WorkerStats:
    """Take trials from the shared study until none below N is left or the deadline passes."""
    storage = open_storage(config)
    # Each worker (and each resumed run) samples from its own stream of random numbers.
    probe = open_study(config, storage)
    seed = config.seed + 7919 * worker_index + len(probe.get_trials(deepcopy=False, states=_finished_states()))
    study = open_study(config, storage, seed=seed)
    n_trials = effective_n_trials(config)
    space = config.search_space()
    base = config.base_train_config()
    stats = WorkerStats()
    while deadline is None or time.time() < deadline:
        trial_id = claim_trial(study, storage, n_trials, claim_lock_path(config))
        if trial_id is None:
            break
        state = run_trial(config, study, storage, trial_id, space, base, log)
        stats.ran += 1
        counter = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(state, "failed")
        setattr(stats, counter, getattr(stats, counter) + 1)
    return stats


def _finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def run_trial(config: TuneConfig, study, storage, trial_id: int, space, base, log: Callable[[str], None]) -> str:
    """Train one trial's settings; tell the study COMPLETE (best epoch's metric), PRUNED or FAIL."""
    import optuna
    from optuna.trial import TrialState

    from ..training import TrainConfig, train_model

    trial = optuna.Trial(study, trial_id)
    run_dir = trial_dir(config, trial.number)
    if run_dir.exists():  # left over from an interrupted attempt at this number
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    storage.set_trial_user_attr(trial_id, "run_dir", str(run_dir))
    log_file = (run_dir / "train.log").open("a")

    def trial_log(message: str) -> None:
        log_file.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
        log_file.flush()

    sign = 1.0 if config.direction == "maximize" else -1.0
    value: float | None = None
    state = TrialState.FAIL
    started = time.perf_counter()
    try:
        with _Heartbeat(storage, trial_id, config.heartbeat_interval):
            params = space.suggest(trial)
            trial_log(f"trial {trial.number}: {params}")
            log(f"trial {trial.number}: {_format_params(params)}")
            # Trials skip the test-time extras (temperature scaling, TF-IDF baseline): only
            # the validation metric decides between them.
            settings = {**base.to_dict(), **params, "calibrate": False, "baseline": False}
            train_config = TrainConfig.from_dict(settings)

            def on_epoch_end(record: dict[str, Any]) -> None:
                trial.report(float(record[config.metric]), int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {record['epoch']}: {config.metric} {record[config.metric]:.4f}")

            result = train_model(train_config, config.data_dir, run_dir, on_epoch_end=on_epoch_end, log=trial_log)
            value = max((float(r[config.metric]) for r in result.history), key=lambda v: sign * v)
            state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        trial_log(f"pruned: {exc}")
    except KeyboardInterrupt:
        storage.set_trial_user_attr(trial_id, "error", "interrupted (Ctrl+C)")
        study.tell(trial, state=TrialState.FAIL)
        _cleanup_run(run_dir)
        log_file.close()
        raise
    except Exception as exc:  # a trial's failure (bad combination, out of memory) must not end the study
        try:
            storage.set_trial_user_attr(trial_id, "error", f"{type(exc).__name__}: {exc}")
        except Exception:  # the trial was finished elsewhere meanwhile; the log still has the error
            pass
        import traceback

        trial_log(f"failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        log(f"trial {trial.number} failed: {type(exc).__name__}: {exc}")
    finally:
        log_file.close()
    storage.set_trial_user_attr(trial_id, "train_seconds", round(time.perf_counter() - started, 2))
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except Exception as exc:  # e.g. marked FAIL meanwhile by another machine's stale-trial check
        log(f"trial {trial.number}: could not record its result ({exc})")
        state = TrialState.FAIL
    if state == TrialState.COMPLETE:
        log(f"trial {trial.number} finished: {config.metric} {value:.4f}")
        prune_models(config, study)
    else:
        if state == TrialState.PRUNED:
            log(
                f"trial {trial.number} pruned after epoch {max(trial.storage.get_trial(trial_id).intermediate_values, default=0)}"
            )
        _cleanup_run(run_dir)
    gc.collect()
    return state.name


def prune_models(config: TuneConfig, study) -> None:
    """Keep model weights only for the best completed trial (metrics and reports stay for all).

    Safe with many workers: a trial's weights are deleted only when a better completed trial
    is visible, so the final best trial's model is never deleted.
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    pick = max if config.direction == "maximize" else min
    best = pick(complete, key=lambda t: t.value)
    for frozen in complete:
        if frozen.number != best.number:
            _cleanup_run(trial_dir(config, frozen.number))


def _cleanup_run(run_dir: Path) -> None:
    """A finished, pruned or beaten trial's weights go; its logs and reports stay."""
    from ..training.checkpoint import CHECKPOINT_DIR

    for name in (CHECKPOINT_DIR, "model.tmp", "model"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
