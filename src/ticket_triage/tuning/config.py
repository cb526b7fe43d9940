"""TuneConfig: every setting of a hyperparameter study, validated, saved in the study folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_macro_f1": "maximize", "val_accuracy": "maximize", "val_loss": "minimize"}


@dataclass
class TuneConfig:
    data_dir: str  # folder from `triage data prepare`
    out_dir: str  # the study folder: study.db, trials/, trials.csv, best_params.yaml, plots
    space: str | None = None  # search-space YAML; None: the default space for the embedded model
    n_trials: int = 20  # total trials in the study, across all workers and all resumed runs
    timeout: float | None = None  # seconds; no new trial starts after it (running ones finish)
    sampler: str = "tpe"  # tpe | random | grid
    pruner: str = "median"  # median | hyperband | none
    pruner_startup_trials: int = 3  # median: completed trials before any pruning
    pruner_warmup_epochs: int = 0  # median: epochs a trial always gets before it may be pruned
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///<out_dir>/study.db
    study_name: str = "triage"
    metric: str = "val_macro_f1"  # val_macro_f1 | val_accuracy | val_loss, read after every epoch
    direction: str | None = None  # maximize | minimize; None: what suits the metric
    workers: int = 1  # local worker processes, each taking trials from the shared storage
    retrain_best: bool = False  # train the best settings once more, into <out_dir>/best
    seed: int = 42  # sampler seed (each worker derives its own from it)
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats
    grace_period: int = 120  # a trial silent this long (another machine died) is marked FAIL
    train: dict[str, Any] = field(default_factory=dict)  # fixed TrainConfig settings for every trial
    # Settings of `train` given as options: by default they win over the search space (their entries
    # are taken out of it); with space_wins the space overrides them, as it overrides all of `train`.
    fixed: list[str] = field(default_factory=list)
    space_wins: bool = False

    def __post_init__(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ConfigError(message)

        self.data_dir, self.out_dir = str(self.data_dir), str(self.out_dir)
        self.space = str(self.space) if self.space is not None else None
        need(
            Path(self.data_dir).is_dir(),
            f"data folder {self.data_dir} does not exist; make one with `triage data prepare`",
        )
        need(
            (Path(self.data_dir) / "train.parquet").is_file(),
            f"data folder {self.data_dir} has no train.parquet; is it a folder from `triage data prepare`?",
        )
        need(self.n_trials >= 1, f"n_trials must be at least 1, got {self.n_trials}")
        need(self.timeout is None or self.timeout > 0, f"timeout must be positive seconds, got {self.timeout}")
        need(self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        need(self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        need(
            self.pruner_startup_trials >= 0,
            f"pruner_startup_trials must be 0 or more, got {self.pruner_startup_trials}",
        )
        need(self.pruner_warmup_epochs >= 0, f"pruner_warmup_epochs must be 0 or more, got {self.pruner_warmup_epochs}")
        need(self.metric in METRICS, f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.direction is None:
            self.direction = METRICS[self.metric]
        need(
            self.direction in ("maximize", "minimize"),
            f"direction must be maximize or minimize, got {self.direction!r}",
        )
        need(self.workers >= 1, f"workers must be at least 1, got {self.workers}")
        need(bool(self.study_name), "study_name must not be empty")
        need(
            self.storage is None or "://" in self.storage,
            f"storage must be a database URL such as sqlite:///study.db or postgresql://user@host/db, got {self.storage!r}",
        )
        need(
            self.heartbeat_interval >= 1, f"heartbeat_interval must be at least 1 second, got {self.heartbeat_interval}"
        )
        need(
            self.grace_period > self.heartbeat_interval,
            f"grace_period ({self.grace_period}) must be longer than heartbeat_interval ({self.heartbeat_interval})",
        )
        need(isinstance(self.train, dict), "train must be a mapping of TrainConfig settings")
        need(
            set(self.fixed) <= set(self.train),
            f"fixed names settings that train does not set: {sorted(set(self.fixed) - set(self.train))}",
        )
        self.base_train_config()  # unknown or invalid pass-through settings fail now, not in every trial
        space = self.search_space()  # so does a bad search space
        if self.sampler == "grid":
            space.grid()  # every entry must have a finite list of values

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out_dir) / 'study.db').resolve()}"

    def base_train_config(self):
        """The fixed settings of every trial, as the user gave them (calibrate/baseline as given)."""
        from ..training import TrainConfig

        return TrainConfig.from_dict(dict(self.train))

    def search_space(self):
        """The space searched: the YAML's, less the settings fixed by an option (unless space_wins)."""
        from .space import load_space

        space = load_space(self.space)
        return space if self.space_wins else space.without(self.fixed)

    def fixed_in_space(self) -> list[str]:
        """The search space's settings that an option fixes (taken out of it, unless space_wins)."""
        from .space import load_space

        return sorted(set(self.fixed) & set(load_space(self.space).params))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TuneConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown tuning setting(s) {', '.join(map(repr, unknown))}; known settings: {', '.join(sorted(names))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid tuning settings: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TuneConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tuning config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"tuning config file {path} must be a mapping of setting: value")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
