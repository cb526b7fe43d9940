"""The search space: which TrainConfig settings a study varies, and how.

A YAML mapping of setting name -> distribution, e.g.

    lr:            {type: float, low: 1.0e-5, high: 2.0e-4, log: true}
    batch_size:    {type: categorical, choices: [16, 32]}
    epochs:        {type: int, low: 2, high: 4}
    truncation:    {type: categorical, choices: [head, head+tail]}

Types: `float` (optional `log: true` or `step`), `int` (optional `step`, `log`), `categorical`
(`choices`). `loguniform` and `uniform` are accepted as shorthands for float with/without log.
Every name must be a TrainConfig field, and every value the space can produce must be one
TrainConfig accepts: a bad space fails before the first trial, with the entry named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

DEFAULT_SPACE = "default_space.yaml"
_TYPES = ("float", "int", "categorical")
_ALIASES = {
    "loguniform": ("float", True),
    "log_uniform": ("float", True),
    "uniform": ("float", False),
    "choice": ("categorical", False),
    "integer": ("int", False),
}
# Settings a study must not vary: they say where and how to run, not what to learn.
_NOT_TUNABLE = (
    "model",
    "device",
    "threads",
    "precision",
    "checkpoint_every",
    "calibrate",
    "baseline",
    "mlflow",
    "eval_batch_size",
)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """The values a grid search visits: every choice, or every step of a stepped range."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            values = list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        elif self.step is not None:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            values = [round(self.low + i * self.step, 12) for i in range(n)]
        else:
            raise ConfigError(
                f"search space entry {self.name!r}: the grid sampler needs `step` for a float range, or a categorical list of values"
            )
        if len(values) > 1000:
            raise ConfigError(
                f"search space entry {self.name!r}: {len(values)} grid values is too many; use a larger `step` or categorical choices"
            )
        return values

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class SearchSpace:
    params: dict[str, ParamSpec] = field(default_factory=dict)
    source: str = "<dict>"

    def suggest(self, trial) -> dict[str, Any]:
        return {name: spec.suggest(trial) for name, spec in self.params.items()}

    def grid(self) -> dict[str, list[Any]]:
        return {name: spec.grid_values() for name, spec in self.params.items()}

    def max_of(self, name: str, default: Any) -> Any:
        spec = self.params.get(name)
        if spec is None:
            return default
        return max(spec.choices) if spec.type == "categorical" else spec.high

    def to_dict(self) -> dict[str, Any]:
        return {name: spec.to_dict() for name, spec in self.params.items()}

    def without(self, names) -> "SearchSpace":
        """This space less the settings `names` (those fixed by an option)."""
        kept = {name: spec for name, spec in self.params.items() if name not in set(names)}
        if not kept:
            raise ConfigError(
                f"every setting of search space {self.source} ({', '.join(self.params)}) is fixed by an option: "
                "leave one of those options out, give another --space, or pass --space-wins"
            )
        return SearchSpace(kept, self.source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "SearchSpace":
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"search space {source} must be a non-empty mapping of setting: {{type: ..., ...}}")
        return cls({str(name): _parse_entry(str(name), entry, source) for name, entry in data.items()}, source)


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and validate a search-space YAML; None gives the default space for the embedded model."""
    if path is None:
        text = resources.files("ticket_triage.tuning").joinpath(DEFAULT_SPACE).read_text()
        source = f"(default) {DEFAULT_SPACE}"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"search space file {path} does not exist")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {source} is not valid YAML: {exc}") from None
    return SearchSpace.from_dict(data, source)


def _parse_entry(name: str, entry: Any, source: str) -> ParamSpec:
    from ..training import TrainConfig

    where = f"search space entry {name!r} (in {source})"

    def fail(message: str):
        raise ConfigError(f"{where}: {message}")

    known = {f.name for f in fields(TrainConfig)}
    if name not in known:
        fail(f"not a training setting; tunable settings: {', '.join(sorted(known - set(_NOT_TUNABLE)))}")
    if name in _NOT_TUNABLE:
        fail(
            f"{name} says how to run, not what to learn; pass it as a fixed option (e.g. --{name.replace('_', '-')}) instead"
        )
    if not isinstance(entry, dict):
        fail("must be a mapping such as {type: float, low: 1.0e-5, high: 1.0e-4, log: true}")
    entry = dict(entry)
    kind = str(entry.pop("type", entry.pop("distribution", "")) or "").lower()
    log = bool(entry.pop("log", False))
    if kind in _ALIASES:
        kind, alias_log = _ALIASES[kind]
        log = log or alias_log
    if kind not in _TYPES:
        fail(f"unknown distribution type {kind or None!r}; use one of {', '.join(_TYPES)} (or loguniform, uniform)")

    if kind == "categorical":
        choices = entry.pop("choices", entry.pop("values", None))
        if entry:
            fail(f"unexpected keys {sorted(entry)} for a categorical entry (it takes `choices`)")
        if not isinstance(choices, list) or not choices:
            fail("`choices` must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            fail("`choices` has duplicates")
        if any(not isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            fail("`choices` may hold only strings, numbers, booleans or null")
        spec = ParamSpec(name, "categorical", choices=tuple(choices))
        probe = list(choices)
    else:
        low, high, step = entry.pop("low", None), entry.pop("high", None), entry.pop("step", None)
        if entry:
            fail(f"unexpected keys {sorted(entry)} for a {kind} entry (it takes low, high, log, step)")
        for key, value in (("low", low), ("high", high)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                fail(f"`{key}` must be a number, got {value!r}")
            if kind == "int" and float(value) != int(value):
                fail(f"`{key}` must be a whole number for an int entry, got {value!r}")
        if low > high:
            fail(f"low ({low}) is above high ({high})")
        if log and low <= 0:
            fail(f"a log distribution needs low > 0, got low={low}")
        if step is not None:
            if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
                fail(f"`step` must be a positive number, got {step!r}")
            if log:
                fail("`step` and `log` cannot be combined")
        if kind == "int":
            low, high = int(low), int(high)
            step = int(step) if step is not None else None
        else:
            low, high = float(low), float(high)
            step = float(step) if step is not None else None
        spec = ParamSpec(name, kind, low=low, high=high, log=log, step=step)
        probe = [low, high]

    # Every value the entry can produce must be one TrainConfig accepts.
    for value in probe:
        try:
            TrainConfig(**{name: value})
        except ConfigError as exc:
            fail(f"value {value!r} is not a valid {name}: {exc}")
        except TypeError as exc:
            fail(f"value {value!r} is not a valid {name}: {exc}")
    return spec
