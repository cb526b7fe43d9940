"""What a study leaves in its folder: trials.csv, best_params.yaml, plots; and the summary table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import TuneConfig

TRIALS_CSV = "trials.csv"
BEST_PARAMS = "best_params.yaml"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"


def study_trials(study, n_trials: int) -> list:
    """The study's trials that count (numbers below N); surplus queue entries are left out."""
    return [t for t in study.get_trials(deepcopy=False) if t.number < n_trials]


def trial_row(trial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": json.dumps(trial.params, sort_keys=True),
        "duration_s": round(duration, 2) if duration is not None else None,
        "epochs_reported": len(trial.intermediate_values),
        "error": trial.user_attrs.get("error", ""),
    }


def write_trials_csv(path: Path, trials: list) -> Path:
    rows = [trial_row(t) for t in trials]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["number", "state", "value", "params", "duration_s", "epochs_reported", "error"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def best_train_config(config: TuneConfig, best_params: dict[str, Any]):
    """The full TrainConfig of the best trial: fixed settings as given, plus the best values."""
    from ..training import TrainConfig

    return TrainConfig.from_dict({**config.base_train_config().to_dict(), **best_params})


def write_best_params(path: Path, config: TuneConfig, best) -> Path:
    train_config = best_train_config(config, best.params)
    header = (
        f"# Best trial {best.number} of study {config.study_name!r}: {config.metric} = {best.value:.4f}\n"
        f"# Tuned: {', '.join(sorted(best.params)) or '(nothing)'}. Use with: triage train --config {path.name} --data ... --out ...\n"
    )
    path.write_text(header + yaml.safe_dump(train_config.to_dict(), sort_keys=False))
    return path


def write_plots(out_dir: Path, study, log: Callable[[str], None]) -> list[Path]:
    """Optimisation history, and parameter importances where there is enough to rank."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import warnings

    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    written: list[Path] = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is "experimental"
        if complete:
            ax = ovm.plot_optimization_history(study)
            ax.figure.set_size_inches(8, 5)
            ax.figure.tight_layout()
            ax.figure.savefig(out_dir / HISTORY_PNG, dpi=110)
            plt.close(ax.figure)
            written.append(out_dir / HISTORY_PNG)
        else:
            log("no completed trial yet: no optimisation-history plot")
        varied = {name for t in complete for name in t.params if len({repr(u.params.get(name)) for u in complete}) > 1}
        if len(complete) >= 2 and varied:
            try:
                ax = ovm.plot_param_importances(study)
                ax.figure.set_size_inches(8, 5)
                ax.figure.tight_layout()
                ax.figure.savefig(out_dir / IMPORTANCE_PNG, dpi=110)
                plt.close(ax.figure)
                written.append(out_dir / IMPORTANCE_PNG)
            except Exception as exc:  # importance needs variation the study may not have
                log(f"parameter importances not plotted: {exc}")
        else:
            log("parameter importances need at least 2 completed trials with varied settings: not plotted")
    return written


def summary_table(trials: list, metric: str, direction: str, limit: int = 10):
    """A rich Table of the best trials first, then a count of the rest."""
    from rich.table import Table

    sign = -1.0 if direction == "maximize" else 1.0
    ordered = sorted(
        trials, key=lambda t: (t.state.name != "COMPLETE", sign * (t.value if t.value is not None else 0.0), t.number)
    )
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    table = Table(title=f"Trials by {metric} ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))})")
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(metric, justify="right")
    table.add_column("time", justify="right")
    table.add_column("settings")
    for t in ordered[:limit]:
        row = trial_row(t)
        value = f"{t.value:.4f}" if t.value is not None else "-"
        duration = f"{row['duration_s']:.0f}s" if row["duration_s"] is not None else "-"
        settings = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t.params.items())
        )
        table.add_row(str(t.number), t.state.name, value, duration, settings or row["error"])
    if len(ordered) > limit:
        table.caption = f"... and {len(ordered) - limit} more in {TRIALS_CSV}"
    return table
