"""Soft targets for knowledge distillation: a teacher's log-probabilities, and the loss on them.

Hinton et al. (2015): the student matches the teacher's probabilities softened by a temperature
T, which carry what the teacher knows about which wrong classes are near ("this debt-collection
letter reads a bit like credit reporting"), plus ordinary cross-entropy on the gold labels:

    loss = alpha * CE(student, gold) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

T^2 keeps the soft term's gradients the same size whatever T is. Rows without a gold label
(unlabelled narratives, label -1) contribute to the soft term only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNLABELLED = -1  # the label id of a row that only has the teacher's targets


@dataclass
class SoftTargets:
    """Teacher log-probabilities for the training split, and extra texts with teacher targets only.

    train: (N_train, C) aligned with the prepared training split's rows (before any subset);
    extra_texts / extra: unlabelled texts and their (M, C) log-probabilities."""

    train: np.ndarray
    temperature: float = 2.0
    alpha: float = 0.5
    extra_texts: list[str] = field(default_factory=list)
    extra: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.extra is None:
            self.extra = np.zeros((0, self.train.shape[1]), dtype=np.float32)
        if len(self.extra_texts) != len(self.extra):
            raise ValueError(f"{len(self.extra_texts)} extra texts but {len(self.extra)} rows of targets")


def distillation_loss(student_logits, targets, teacher_logprobs, temperature: float, alpha: float, class_weight=None):
    """The loss above for one batch. student_logits (B, C); targets (B,) with -1 for unlabelled;
    teacher_logprobs (B, C) at temperature 1 (they are re-softened here, so T can change on resume)."""
    import torch.nn.functional as F

    t = float(temperature)
    student_t = F.log_softmax(student_logits / t, dim=-1)
    teacher_t = F.log_softmax(teacher_logprobs / t, dim=-1)  # log p^(1/T), renormalised
    # KL(teacher || student) per row, averaged over the batch.
    soft = F.kl_div(student_t, teacher_t, reduction="batchmean", log_target=True) * t * t
    labelled = targets != UNLABELLED
    if alpha == 0 or not bool(labelled.any()):
        return (1 - alpha) * soft
    hard = F.cross_entropy(student_logits[labelled], targets[labelled], weight=class_weight)
    return alpha * hard + (1 - alpha) * soft


def kl_to_teacher(student_logits: np.ndarray, teacher_logprobs: np.ndarray, temperature: float = 1.0) -> float:
    """Mean KL(teacher_T || student_T) over rows, in nats: how far the student is from its teacher."""
    import torch
    import torch.nn.functional as F

    s = torch.as_tensor(np.asarray(student_logits, dtype=np.float32)) / temperature
    te = torch.as_tensor(np.asarray(teacher_logprobs, dtype=np.float32)) / temperature
    return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(te, -1), reduction="batchmean", log_target=True))
