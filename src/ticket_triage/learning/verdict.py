"""The gate's rules (a YAML file; the shipped default is gate_rules.yaml beside this module) and
the verdict they give on a comparison (compare.py's per-set metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

METRICS = ("macro_f1", "accuracy", "recall", "ece", "review_rate")
LOWER_IS_BETTER = {"ece", "review_rate"}
_KEYS = {"name", "metric", "sets", "max_drop_points", "must_improve", "min_gain_points", "min_support", "judge"}
JUDGES = ("point", "interval")


@dataclass(frozen=True)
class GateRule:
    name: str
    metric: str
    sets: tuple[str, ...] | None  # None: every evaluated set
    max_drop_points: float | None = None
    must_improve: bool = False
    min_gain_points: float = 0.0
    min_support: int = 0
    # point: the difference of the two point estimates decides. interval: its paired-bootstrap
    # interval does: a drop fails only when the whole interval is past the limit (the challenger
    # is worse with that confidence), an improvement passes only when the whole interval is above it.
    judge: str = "point"


@dataclass(frozen=True)
class GateRules:
    rules: tuple[GateRule, ...]
    source: str


def load_rules(path: str | Path | None = None) -> GateRules:
    """Rules from `path`, or the shipped default; every mistake a ConfigError naming the file."""
    if path is None:
        text, source = (
            resources.files("ticket_triage.learning").joinpath("gate_rules.yaml").read_text(),
            "gate_rules.yaml (shipped default)",
        )
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"rules file {path} does not exist")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    items = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: expected `rules:` with a list of rules (see the shipped gate_rules.yaml)")
    return GateRules(tuple(_rule(source, i, item) for i, item in enumerate(items, start=1)), source)


def _rule(source: str, i: int, item: Any) -> GateRule:
    where = f"{source}: rule {i}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a mapping (metric, sets, max_drop_points or must_improve)")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    metric = item.get("metric")
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    sets = item.get("sets", "all")
    if sets == "all":
        names = None
    elif isinstance(sets, list) and sets and all(isinstance(s, str) for s in sets):
        names = tuple(sets)
    else:
        raise ConfigError(f"{where}: sets must be `all` or a list of set names, got {sets!r}")
    drop, improve = item.get("max_drop_points"), bool(item.get("must_improve", False))
    if (drop is None) == (not improve):
        raise ConfigError(f"{where}: give exactly one of max_drop_points or must_improve: true")
    try:
        drop = None if drop is None else float(drop)
        gain = float(item.get("min_gain_points", 0.0))
        support = int(item.get("min_support", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: max_drop_points, min_gain_points and min_support must be numbers") from None
    if (drop is not None and drop < 0) or gain < 0 or support < 0:
        raise ConfigError(f"{where}: max_drop_points, min_gain_points and min_support must be 0 or more")
    judge = item.get("judge", "point")
    if judge not in JUDGES:
        raise ConfigError(f"{where}: judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    name = str(item.get("name") or f"{metric} {'improves' if improve else f'drops at most {drop:g} points'}")
    return GateRule(name, metric, names, drop, improve, gain, support, judge)


def verdict(sets: dict[str, dict[str, Any]], rules: GateRules) -> dict[str, Any]:
    """{"passed", "rules": source, "checks": [...]}: one check per rule, set (and category for recall).

    `sets`: compare.py's per-set results, each with "metrics" (metric -> {"champion", "challenger"};
    recall -> category -> the same) and "support" (category -> rows)."""
    checks: list[dict[str, Any]] = []
    for rule in rules.rules:
        names = list(sets) if rule.sets is None else list(rule.sets)
        for name in names:
            if name not in sets:
                checks.append(_check(rule, name, None, None, None, False, "set not evaluated"))
                continue
            result = sets[name]
            if rule.metric == "recall":
                for category, pair in result["metrics"]["recall"].items():
                    support = int(result["support"].get(category, 0))
                    if support < max(rule.min_support, 1):
                        checks.append(
                            _check(
                                rule,
                                name,
                                category,
                                pair,
                                None,
                                True,
                                f"not judged: {support} row(s) < {max(rule.min_support, 1)}",
                            )
                        )
                        continue
                    checks.append(_judge(rule, name, category, pair))
            else:
                checks.append(_judge(rule, name, None, result["metrics"][rule.metric]))
    return {"passed": all(c["passed"] for c in checks), "rules": rules.source, "checks": checks}


def _judge(rule: GateRule, set_name: str, category: str | None, pair: dict[str, Any]) -> dict[str, Any]:
    # gain: how much better the challenger is, in points, whichever way the metric runs
    sign = -1.0 if rule.metric in LOWER_IS_BETTER else 1.0
    gain = sign * (float(pair["challenger"]) - float(pair["champion"])) * 100
    low, high = gain, gain  # the gain's range the rule judges: the point, or its interval
    if rule.judge == "interval":
        low, high = sorted(sign * float(v) * 100 for v in pair["delta_ci"])
    within = "" if rule.judge == "point" else f", interval {low:+.2f} to {high:+.2f}"
    if rule.must_improve:
        ok = low > rule.min_gain_points
        detail = f"{gain:+.2f} points{within} (must be above {rule.min_gain_points:+.2f})"
    else:
        ok = high >= -rule.max_drop_points - 1e-9
        detail = f"{gain:+.2f} points{within} (at most {rule.max_drop_points:g} worse)"
    return _check(rule, set_name, category, pair, gain, ok, detail)


def _check(rule, set_name, category, pair, gain, ok, detail) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "set": set_name,
        "category": category,
        "champion": None if pair is None else pair["champion"],
        "challenger": None if pair is None else pair["challenger"],
        "gain_points": None if gain is None else round(gain, 4),
        "passed": bool(ok),
        "detail": detail,
    }
