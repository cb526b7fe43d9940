"""Base rows + agents' corrections -> the rows a retrain learns from, and the held-out corrections.

- Time split: the newest corrections (by correction time) are held out for the gate; the model
  never trains on them, so the gate sees how it does on what agents fix now.
- Precedence: corrections come first, newest first, so in a group of near-duplicates (MinHash
  LSH, the same index and threshold as `triage data prepare`: data/neardup.py) the newest
  correction is the group's first node and the one kept; base rows in its group, whatever their
  label, are dropped. Groups of base rows alone follow prepare's rule (data/neardup.resolve_groups):
  the first is kept when they agree, all go when their labels conflict.
- No leakage: a training row that is a near-duplicate of an evaluation text (the base validation
  and test splits, the held-out corrections) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ORIGIN_BASE, ORIGIN_CORRECTION = "base", "correction"


@dataclass
class MergeResult:
    train: Any  # DataFrame: text, label, weight, origin
    counts: dict[str, int] = field(default_factory=dict)


def time_split(corrections, holdout_frac: float):
    """(train, held_out): the newest round(frac * n) corrections are held out; ties keep file order."""
    if not 0 <= holdout_frac < 1:
        from ..errors import ConfigError

        raise ConfigError(f"holdout_frac must be in [0, 1), got {holdout_frac}")
    ordered = corrections.sort_values("corrected_at", kind="stable").reset_index(drop=True)
    n_hold = int(round(holdout_frac * len(ordered)))
    cut = len(ordered) - n_hold
    return ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)


def merge_rows(
    base_train,
    corrections,
    *,
    correction_weight: float,
    threshold: float,
    exclude_texts: Sequence[str] = (),
) -> MergeResult:
    """The training rows: corrections (weight `correction_weight`) over the base rows (weight 1)."""
    import pandas as pd

    from ..data.neardup import near_duplicates_of, resolve_groups

    newest_first = corrections.sort_values("corrected_at", ascending=False, kind="stable")
    texts = newest_first["text"].astype(str).tolist() + base_train["text"].astype(str).tolist()
    labels = newest_first["label"].tolist() + base_train["label"].tolist()
    n_corr = len(newest_first)
    root = _components(texts, threshold)
    names = sorted(set(labels))
    label_ids = np.array([names.index(x) for x in labels], dtype=np.int64)
    dup, conflict = resolve_groups(root, label_ids)
    node = np.arange(len(texts))
    # a group holding a correction is the newest correction's (its root: corrections come first)
    corrected_group = root < n_corr
    keep = np.where(corrected_group, node == root, ~dup & ~conflict)
    is_corr = node < n_corr
    counts = {
        "corrections_in": n_corr,
        "base_rows_in": len(base_train),
        "base_rows_relabelled_or_replaced": int((corrected_group & ~is_corr).sum()),
        "corrections_superseded": int((is_corr & ~keep).sum()),
        "base_near_duplicates_dropped": int((~corrected_group & ~is_corr & ~keep).sum()),
    }
    merged = pd.DataFrame(
        {
            "text": texts,
            "label": labels,
            "weight": np.where(is_corr, float(correction_weight), 1.0),
            "origin": np.where(is_corr, ORIGIN_CORRECTION, ORIGIN_BASE),
        }
    )[keep]
    if len(exclude_texts) and len(merged):
        leak = near_duplicates_of(merged["text"].tolist(), list(exclude_texts), threshold)
        counts["dropped_as_near_duplicates_of_evaluation_rows"] = int(leak.sum())
        merged = merged[~leak]
    else:
        counts["dropped_as_near_duplicates_of_evaluation_rows"] = 0
    merged = merged.reset_index(drop=True)
    counts["train_rows"] = len(merged)
    counts["train_corrections"] = int((merged["origin"] == ORIGIN_CORRECTION).sum())
    counts["train_base_rows"] = int((merged["origin"] == ORIGIN_BASE).sum())
    return MergeResult(merged, counts)


def _components(texts: list[str], threshold: float) -> np.ndarray:
    """root[i]: the first text of i's near-duplicate group (prepare's index, in memory)."""
    import tempfile

    import duckdb
    import pyarrow as pa

    from ..data.neardup import NearDuplicateIndex, text_shingles

    if not texts:
        return np.zeros(0, dtype=np.int64)
    con = duckdb.connect()
    try:
        shingles, offsets = text_shingles(con, pa.array(texts, pa.string()))
    finally:
        con.close()
    with tempfile.TemporaryDirectory(prefix="triage-retrain-") as work:
        index = NearDuplicateIndex(threshold, Path(work))
        index.add(shingles, offsets)
        return index.components()
