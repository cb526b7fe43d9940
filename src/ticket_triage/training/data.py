"""Choosing training rows and loss weights (prepared splits are read by data/io.py)."""

from __future__ import annotations

import numpy as np

from ..data.io import Split


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


def balanced_class_weights(labels: np.ndarray, num_classes: int, row_weights: np.ndarray | None = None) -> np.ndarray:
    """n / (k * count_c): each class contributes equally to the loss (sklearn's 'balanced').
    Rows labelled -1 (unlabelled, distillation targets only) are left out. With per-row weights
    the counts are weighted too, so heavy rows (retrain's corrections) do not shift the class
    balance: they count more within their class, not their class more than the others."""
    keep = labels >= 0
    labels = labels[keep]
    weights = None if row_weights is None else np.asarray(row_weights, dtype=np.float64)[keep]
    counts = np.bincount(labels, weights=weights, minlength=num_classes).astype(np.float64)
    total = len(labels) if weights is None else weights.sum()
    floor = 1.0 if weights is None else max(float(weights[weights > 0].min(initial=1.0)), 1e-6)
    return total / (num_classes * np.clip(counts, floor, None))


def weighted_cross_entropy(logits, targets, row_weights, class_weight=None, mean_weight: float = 1.0):
    """Cross-entropy with a weight per row (and optionally per class), for one batch.

    sum(w_i * c_i * CE_i) / (sum(c_i) * mean_weight): with every w_i = 1 this is exactly torch's
    CrossEntropyLoss(weight=class_weight). Dividing by the whole split's mean weight rather than the
    batch's own keeps a row of weight 3 worth three rows of weight 1 wherever it lands, instead of
    diluting it in a batch of other heavy rows."""
    import torch.nn.functional as F

    per_row = F.cross_entropy(logits, targets, reduction="none")
    per_class = class_weight[targets] if class_weight is not None else per_row.new_ones(per_row.shape)
    return (row_weights * per_class * per_row).sum() / (per_class.sum() * mean_weight)
