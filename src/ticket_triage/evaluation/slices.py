"""Metrics by slice: per input file (`source`) and per `Date received` year.

A model can look fine overall and still fail on one export or one year (the CFPB renamed its
products in 2017 and 2022). Each slice gets its row count, so a reader can tell a real drop
from the noise of a dozen rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

UNKNOWN = "unknown"
SMALL_SLICE = 30  # fewer rows than this: flagged in the report as too few to judge
_YEAR = re.compile(r"(?<!\d)(19\d\d|20\d\d)(?!\d)")


def year_of(value: Any) -> str:
    """The year of a date string ('2021-03-04', '03/04/2021', '2021-03-04T00:00:00', ...); 'unknown' if none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return UNKNOWN
    text = str(value).strip()
    found = _YEAR.search(text)
    if found:
        return found.group(1)
    if not text:
        return UNKNOWN
    import pandas as pd

    # Two-digit years ('3/4/21') and the like: let pandas try, and give up quietly.
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    return UNKNOWN if pd.isna(parsed) else str(parsed.year)


def years_of(values: Sequence[Any]) -> list[str]:
    """`year_of` for every value (parsed once per distinct value: dates repeat a lot)."""
    cache: dict[Any, str] = {}
    out = []
    for v in values:
        key = v if isinstance(v, str) else repr(v)
        if key not in cache:
            cache[key] = year_of(v)
        out.append(cache[key])
    return out


def slice_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{slice: {n, accuracy, macro_f1, recall: {category: r or None}, support: {category: n}}}.

    macro-F1 averages over the categories present in the slice (a category with no rows there
    has no F1 to speak of); recall is None for those. Slices come sorted, 'unknown' last."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray([str(g) for g in groups], dtype=object)
    ids = list(range(len(labels)))
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(set(groups), key=lambda g: (g == UNKNOWN, g)):
        mask = groups == name
        t, p = y_true[mask], y_pred[mask]
        support = np.bincount(t, minlength=len(labels))
        recall = recall_score(t, p, labels=ids, average=None, zero_division=0)
        present = [i for i in ids if support[i]]
        table[name] = {
            "n": int(mask.sum()),
            "accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, labels=present, average="macro", zero_division=0)),
            "recall": {labels[i]: (float(recall[i]) if support[i] else None) for i in ids},
            "support": {labels[i]: int(support[i]) for i in ids},
        }
    return table


def add_slices(metrics: dict[str, Any], y_true, y_pred, sources: Sequence[str], dates: Sequence[Any]) -> dict[str, Any]:
    """Put `by_source` and `by_year` tables into a classification-metrics dictionary."""
    labels = metrics["labels"]
    metrics["by_source"] = slice_metrics(y_true, y_pred, sources, labels)
    metrics["by_year"] = slice_metrics(y_true, y_pred, years_of(dates), labels)
    return metrics


def split_slice_columns(path: str | Path, default_source: str) -> tuple[list[str], list[Any]]:
    """(source, date_received) per row of a prepared split parquet, in file order.

    Folders prepared before multi-input prepare have no `source` column: all rows get
    `default_source`; a missing `date_received` column gives 'unknown' years."""
    import pyarrow.parquet as pq

    path = Path(path)
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    wanted = [c for c in ("source", "date_received") if c in names]
    n = pf.metadata.num_rows
    table = pq.read_table(path, columns=wanted) if wanted else None
    sources = _fill(table.column("source").to_pylist(), default_source) if "source" in names else [default_source] * n
    dates = table.column("date_received").to_pylist() if "date_received" in names else [None] * n
    return sources, dates


def _fill(values: list[Any], default: str) -> list[str]:
    return [str(v) if v not in (None, "") else default for v in values]


def default_source_name(data_dir: str | Path) -> str:
    """What an old prepared folder (no `source` column) calls its one input: the manifest's
    input file name, else the folder's name."""
    import json

    manifest = Path(data_dir) / "manifest.json"
    try:
        info = json.loads(manifest.read_text()).get("input")
    except (OSError, ValueError, AttributeError):
        info = None
    if isinstance(info, dict) and info.get("name"):
        return str(info["name"])
    if isinstance(info, list) and len(info) == 1 and isinstance(info[0], dict) and info[0].get("name"):
        return str(info[0]["name"])
    return Path(data_dir).resolve().name
