"""Reading prepared splits for training: texts and integer labels, in the taxonomy's order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # (N,) int64 ids into the label list

    def __len__(self) -> int:
        return len(self.texts)


def read_labels(data_dir: Path) -> list[str] | None:
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        return list(json.loads(manifest.read_text())["labels"])
    return None


def load_splits(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> tuple[dict[str, Split], list[str]]:
    """The prepared parquet splits in `data_dir` (from `triage data prepare`) and the label names."""
    import pandas as pd

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist: create it with `triage data prepare --input FILE --out {data_dir}`")
    frames = {}
    for name in splits:
        path = data_dir / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path} is missing: {data_dir} must hold train/val/test.parquet from `triage data prepare`")
        frame = pd.read_parquet(path, columns=["text", "label"])
        if frame.empty:
            raise DataError(f"{path} has no rows: prepare more data or lower --min-words")
        frames[name] = frame
    labels = read_labels(data_dir) or sorted(set().union(*(f["label"].unique() for f in frames.values())))
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for name, frame in frames.items():
        unknown = sorted(set(frame["label"]) - set(index))
        if unknown:
            raise DataError(f"{name} split has labels the manifest does not list: {unknown}")
        out[name] = Split(frame["text"].astype(str).tolist(), frame["label"].map(index).to_numpy(dtype=np.int64))
    return out, labels


def stratified_subset(split: Split, n: int, seed: int) -> Split:
    """At most `n` rows, each class keeping its share (and at least one row while n allows)."""
    chosen = stratified_indices(split.labels, n, seed)
    return Split([split.texts[i] for i in chosen], split.labels[chosen])


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted row indices of a stratified subset of at most `n` rows (all rows when n >= len)."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts / counts.sum() * n)).astype(int)
    # Hand out what rounding left over to the largest classes, so exactly n rows are kept.
    for i in np.argsort(-counts)[: max(0, n - quota.sum())]:
        quota[i] += 1
    chosen = []
    for cls, k in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        chosen.extend(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.asarray(chosen))[:n]


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * count_c): each class contributes equally to the loss (sklearn's 'balanced').
    Rows labelled -1 (unlabelled, distillation targets only) are left out."""
    labels = labels[labels >= 0]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.clip(counts, 1, None))
