"""`triage compare`: champion against challenger on the same frozen evaluation sets.

Both models score every set through `inference.Classifier` (the scorer the service and `triage
predict` use). Per set and model: macro-F1, accuracy and per-category recall (the definitions of
evaluation.metrics: every category counts in the macro mean, zero where undefined), expected
calibration error (calibration.expected_calibration_error's bins) and the review rate (tickets
the routing rules send to review: confidence below their category's threshold).

Confidence intervals come from a paired bootstrap: each resample draws one set of row indices
and scores both models on those same rows, so the interval of the difference reflects how the
models differ on the same tickets, not how two independent samples would. Percentile intervals.

Writes into --out: compare.json (everything, plus the verdict), compare.md, routing_changes.csv
(the tickets whose queue would change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError

COMPARE_FILE, REPORT_FILE, CHANGES_FILE = "compare.json", "compare.md", "routing_changes.csv"
CORRECTIONS_SET, BASE_TEST_SET = "corrections", "base_test"
SCALAR_METRICS = ("macro_f1", "accuracy", "ece", "review_rate")


@dataclass
class CompareConfig:
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    n_bins: int = 15  # ECE bins, as calibration.py's default
    batch_size: int = 64
    backend: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ConfigError(f"resamples must be at least 1, got {self.resamples}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be between 0 and 1, got {self.confidence}")


@dataclass
class EvalSet:
    name: str
    path: str
    texts: list[str]
    labels: np.ndarray  # ids into the champion's labels


# -- the sets -----------------------------------------------------------------------------------
def set_name(path: Path) -> str:
    """base_test for a prepared folder's test split, corrections for a retrain's held-out file, else the stem."""
    stem = path.name.split(".")[0]
    if stem == "corrections_holdout":
        return CORRECTIONS_SET
    if stem == "test" and (path.parent / "manifest.json").is_file():
        return BASE_TEST_SET
    return stem


def load_eval_sets(paths: Sequence[str | Path], labels: Sequence[str], taxonomy=None) -> list[EvalSet]:
    """Labelled files (prepared parquet or CFPB-format) as sets, named by `set_name` (made unique)."""
    from ..data.io import read_labelled_file

    index = {name: i for i, name in enumerate(labels)}
    sets: list[EvalSet] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"evaluation file {path} does not exist")
        frame, _report = read_labelled_file(path, taxonomy)
        if frame.empty:
            raise DataError(f"{path} has no labelled rows the model's taxonomy maps")
        unknown = sorted(set(frame["label"]) - set(index))
        if unknown:
            raise DataError(f"{path} has categories the models do not predict: {unknown}")
        name, k = set_name(path), 2
        while any(s.name == name for s in sets):
            name, k = f"{set_name(path)}_{k}", k + 1
        sets.append(EvalSet(name, str(path), frame["text"].tolist(), frame["label"].map(index).to_numpy(np.int64)))
    if not sets:
        raise ConfigError("nothing to compare on: give --base-test and/or --data FILE")
    return sets


# -- metrics on resamples -----------------------------------------------------------------------
def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """The ECE bin of each confidence: calibration._bins' rule ((lower, upper], 0 in the first)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


@dataclass
class Scored:
    """One model's outputs on one set: what every resample needs."""

    pred: np.ndarray  # (n,) predicted ids
    confidence: np.ndarray  # (n,) top probability
    review: np.ndarray  # (n,) bool: routed to review
    queue: list[str] = field(default_factory=list)  # (n,) each ticket's queue (from_proba fills it)

    @classmethod
    def from_proba(cls, probs: np.ndarray, labels: Sequence[str], routing) -> "Scored":
        pred = probs.argmax(1)
        conf = probs[np.arange(len(probs)), pred]
        routes = [routing.route(labels[p], float(c)) for p, c in zip(pred, conf)]
        return cls(pred, conf, np.array([r.needs_review for r in routes], dtype=bool), [r.queue for r in routes])


def resample_metrics(y: np.ndarray, s: Scored, idx: np.ndarray, n_classes: int, n_bins: int) -> dict[str, np.ndarray]:
    """Each metric on each resample (rows idx[b]), vectorised: idx is (B, n) row indices."""
    n_res, n = idx.shape
    c = n_classes
    code = (y * c + s.pred)[idx] + (np.arange(n_res) * c * c)[:, None]
    confusion = np.bincount(code.ravel(), minlength=n_res * c * c).reshape(n_res, c, c)  # [b, true, pred]
    tp = np.einsum("bii->bi", confusion).astype(np.float64)
    support, predicted = confusion.sum(2), confusion.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    correct = (s.pred == y).astype(np.float64)
    bins = bin_index(s.confidence, n_bins)
    gap = np.bincount(
        (bins[idx] + (np.arange(n_res) * n_bins)[:, None]).ravel(),
        weights=(correct - s.confidence)[idx].ravel(),
        minlength=n_res * n_bins,
    ).reshape(n_res, n_bins)
    return {
        "macro_f1": f1.mean(1),
        "accuracy": tp.sum(1) / n,
        "recall": recall,  # (B, C)
        "ece": np.abs(gap).sum(1) / n,
        "review_rate": s.review[idx].mean(1),
    }


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def paired_bootstrap(y: np.ndarray, a: Scored, b: Scored, n_classes: int, config: CompareConfig) -> dict[str, Any]:
    """Point estimates and paired-bootstrap intervals of both models and of the difference b - a."""
    n = len(y)
    rng = np.random.default_rng(config.seed)
    whole = np.arange(n)[None, :]
    point_a = resample_metrics(y, a, whole, n_classes, config.n_bins)
    point_b = resample_metrics(y, b, whole, n_classes, config.n_bins)
    chunk = max(1, 2_000_000 // max(n, 1))  # resamples per block: bounded memory on large sets
    draws_a: dict[str, list[np.ndarray]] = {}
    draws_b: dict[str, list[np.ndarray]] = {}
    for start in range(0, config.resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, config.resamples - start), n))  # the SAME rows for both
        for store, scored in ((draws_a, a), (draws_b, b)):
            for key, value in resample_metrics(y, scored, idx, n_classes, config.n_bins).items():
                store.setdefault(key, []).append(value)
    out: dict[str, Any] = {}
    for key in point_a:
        ra, rb = np.concatenate(draws_a[key]), np.concatenate(draws_b[key])
        if key == "recall":
            out[key] = [
                _entry(point_a[key][0, j], point_b[key][0, j], ra[:, j], rb[:, j], config.confidence)
                for j in range(n_classes)
            ]
        else:
            out[key] = _entry(point_a[key][0], point_b[key][0], ra, rb, config.confidence)
    return out


def _entry(pa: float, pb: float, ra: np.ndarray, rb: np.ndarray, confidence: float) -> dict[str, Any]:
    return {
        "champion": float(pa),
        "challenger": float(pb),
        "delta": float(pb - pa),
        "champion_ci": _interval(ra, confidence),
        "challenger_ci": _interval(rb, confidence),
        "delta_ci": _interval(rb - ra, confidence),
    }


# -- the comparison -----------------------------------------------------------------------------
def threshold_rules(routing, threshold: float | None):
    """The routing rules, every category's review threshold set to `threshold` when one is given."""
    if threshold is None:
        return routing
    if not 0 <= threshold <= 1:
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
    routes = {c: replace(r, threshold=float(threshold)) for c, r in routing.routes.items()}
    return replace(routing, routes=routes, default_threshold=float(threshold))


def compare_models(
    champion: str | Path,
    challenger: str | Path,
    *,
    data: Sequence[str | Path] = (),
    base_test: str | Path | None = None,
    rules_path: str | Path | None = None,
    routing_path: str | Path | None = None,
    threshold: float | None = None,
    out_dir: str | Path,
    config: CompareConfig | None = None,
) -> dict[str, Any]:
    """Score both model folders on every set, write compare.json / compare.md / routing_changes.csv."""
    from ..inference.classifier import Classifier
    from ..service.routing import load_routing
    from .verdict import load_rules, verdict

    config = config or CompareConfig()
    rules = load_rules(rules_path)  # a broken rules file stops before any scoring
    out = Path(out_dir)
    models = {
        role: Classifier.load(path, backend=config.backend, device=config.device)
        for role, path in (("champion", champion), ("challenger", challenger))
    }
    labels = models["champion"].labels
    if sorted(models["challenger"].labels) != sorted(labels):
        raise ConfigError(
            f"the models predict different categories: champion {labels}, challenger {models['challenger'].labels}"
        )
    order = [models["challenger"].labels.index(c) for c in labels]  # the challenger's columns in champion order
    routing = threshold_rules(load_routing(routing_path, labels), threshold)
    paths = ([base_test] if base_test else []) + list(data)
    sets = load_eval_sets(paths, labels, models["champion"].taxonomy)
    results: dict[str, Any] = {}
    changes = []
    for s in sets:
        probs_a = models["champion"].predict_proba(s.texts, config.batch_size)
        probs_b = models["challenger"].predict_proba(s.texts, config.batch_size)[:, order]
        a, b = Scored.from_proba(probs_a, labels, routing), Scored.from_proba(probs_b, labels, routing)
        boot = paired_bootstrap(s.labels, a, b, len(labels), config)
        boot["recall"] = dict(zip(labels, boot["recall"]))
        set_changes = _routing_changes(s, labels, a, b)
        changes.extend(set_changes)
        results[s.name] = {
            "path": s.path,
            "n": len(s.texts),
            "support": {c: int((s.labels == i).sum()) for i, c in enumerate(labels)},
            "metrics": boot,
            "routing_changes": len(set_changes),
        }
    report = {
        "champion": {"path": str(champion), "version": models["champion"].model_version},
        "challenger": {"path": str(challenger), "version": models["challenger"].model_version},
        "labels": labels,
        "routing": {
            "source": routing.source,
            "threshold": threshold,
            "default_threshold": routing.default_threshold,
            "review_queue": routing.review_queue,
        },
        "bootstrap": {
            "resamples": config.resamples,
            "seed": config.seed,
            "confidence": config.confidence,
            "paired": True,
        },
        "sets": results,
        "routing_changes": {"count": len(changes), "file": CHANGES_FILE},
        "verdict": verdict(results, rules),
    }
    _write(out, report, changes)
    return report


def _routing_changes(s: EvalSet, labels, a: Scored, b: Scored) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(s.texts)):
        qa, qb = a.queue[i], b.queue[i]
        if qa != qb:
            rows.append(
                {
                    "set": s.name,
                    "row": i,
                    "label": labels[s.labels[i]],
                    "champion_category": labels[a.pred[i]],
                    "champion_confidence": round(float(a.confidence[i]), 4),
                    "champion_queue": qa,
                    "challenger_category": labels[b.pred[i]],
                    "challenger_confidence": round(float(b.confidence[i]), 4),
                    "challenger_queue": qb,
                    "text": s.texts[i],
                }
            )
    return rows


def _write(out: Path, report: dict[str, Any], changes: list[dict[str, Any]]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARE_FILE).write_text(json.dumps(report, indent=2))
    (out / REPORT_FILE).write_text(markdown(report))
    columns = [
        "set",
        "row",
        "label",
        "champion_category",
        "champion_confidence",
        "champion_queue",
        "challenger_category",
        "challenger_confidence",
        "challenger_queue",
        "text",
    ]
    pd.DataFrame(changes, columns=columns).to_csv(out / CHANGES_FILE, index=False)


def _fmt(entry: dict[str, Any], key: str, scale: float = 100) -> str:
    lo, hi = entry[f"{key}_ci"]
    return f"{entry[key] * scale:.2f} [{lo * scale:.2f}, {hi * scale:.2f}]"


def metric_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, champion, challenger, difference) with their intervals, in points: for compare.md and the CLI table."""
    m = result["metrics"]
    rows = [
        (key, _fmt(m[key], "champion"), _fmt(m[key], "challenger"), _fmt(m[key], "delta")) for key in SCALAR_METRICS
    ]
    for category, entry in m["recall"].items():
        rows.append(
            (
                f"recall {category} ({result['support'][category]})",
                _fmt(entry, "champion"),
                _fmt(entry, "challenger"),
                _fmt(entry, "delta"),
            )
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    v = report["verdict"]
    boot = report["bootstrap"]
    lines = [
        "# Champion vs challenger",
        "",
        f"- champion: `{report['champion']['path']}` ({report['champion']['version']})",
        f"- challenger: `{report['challenger']['path']}` ({report['challenger']['version']})",
        f"- verdict: **{'PASS' if v['passed'] else 'FAIL'}** (rules: {v['rules']})",
        f"- routing: {report['routing']['source']}"
        + (
            f", review threshold {report['routing']['threshold']}" if report["routing"]["threshold"] is not None else ""
        ),
        f"- {report['routing_changes']['count']} ticket(s) would change queue ({report['routing_changes']['file']})",
        "",
        f"Points (x100), with {int(boot['confidence'] * 100)}% paired-bootstrap intervals ({boot['resamples']} resamples, seed {boot['seed']}).",
    ]
    for name, result in report["sets"].items():
        lines += [
            "",
            f"## {name} ({result['n']} rows, {result['routing_changes']} routing changes)",
            "",
            "| metric | champion | challenger | challenger - champion |",
            "|---|---:|---:|---:|",
            *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in metric_rows(result)),
        ]
    failed = [c for c in v["checks"] if not c["passed"]]
    lines += ["", "## Verdict", ""]
    lines += [
        f"- {'ok' if c['passed'] else 'FAILED'}: {c['rule']}, {c['set']}{' / ' + c['category'] if c['category'] else ''}: {c['detail']}"
        for c in (failed or v["checks"])
    ]
    return "\n".join(lines) + "\n"
