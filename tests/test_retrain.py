"""`triage retrain`: merging corrections over the base rows, the time split, weights reaching the
loss, and the run it writes; on a tiny random BERT and small real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _model_support import tiny_train_config

from ticket_triage.errors import DataError

LABELS = ["Credit Reporting", "Debt Collection", "Mortgage", "Card Services", "Loans", "Banking Services"]
TINY = dict(precision="fp32", threads=1, max_length=48, calibrate=False, baseline=False, batch_size=16, seed=7)


def quiet(*_args, **_kwargs):
    pass


def corrections_frame(rows):
    """rows: (ticket_id, text, label, corrected_at ISO)."""
    frame = pd.DataFrame(rows, columns=["ticket_id", "text", "label", "corrected_at"])
    frame["corrected_at"] = pd.to_datetime(frame["corrected_at"], utc=True)
    return frame


def export_csv(path, rows):
    """The CSV of GET /v1/feedback/export (service/routes/feedback.py EXPORT_COLUMNS)."""
    pd.DataFrame(
        [
            {
                "Date received": when,
                "Product": label,
                "Consumer complaint narrative": text,
                "Complaint ID": ticket,
                "Submitted via": "web",
            }
            for ticket, text, label, when in rows
        ]
    ).to_csv(path, index=False)
    return path


# -- weights reach the loss ---------------------------------------------------------------------
def test_weighted_cross_entropy_is_torchs_with_unit_weights_and_ignores_zero_weight_rows():
    import torch

    from ticket_triage.training.data import weighted_cross_entropy

    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    class_w = torch.tensor([1.0, 2.0, 0.5])
    plain = torch.nn.CrossEntropyLoss(weight=class_w)(logits, targets)
    assert torch.allclose(weighted_cross_entropy(logits, targets, torch.ones(4), class_w), plain)
    # a row of weight 0 does not count; a row of weight 3 counts as three copies of it
    only_first = weighted_cross_entropy(logits, targets, torch.tensor([1.0, 0.0, 0.0, 0.0]), None, mean_weight=0.25)
    assert torch.allclose(only_first, torch.nn.functional.cross_entropy(logits[:1], targets[:1]))
    tripled = weighted_cross_entropy(logits, targets, torch.tensor([3.0, 1, 1, 1]), None, mean_weight=1.0)
    copies = torch.nn.functional.cross_entropy(logits[[0, 0, 0, 1, 2, 3]], targets[[0, 0, 0, 1, 2, 3]]) * 6 / 4
    assert torch.allclose(tripled, copies)


def _with_weights(src, dest, weights):
    import shutil

    shutil.copytree(src, dest)
    frame = pd.read_parquet(dest / "train.parquet")
    frame["weight"] = weights(len(frame))
    frame.to_parquet(dest / "train.parquet")
    return dest


def test_weight_column_changes_training_and_unit_weights_do_not(tiny_model_dir, make_prepared, tmp_path):
    """Fails if the `weight` column is ignored: the weighted run must learn other weights."""
    from safetensors.numpy import load_file

    from ticket_triage.training import train_model

    base = make_prepared(tmp_path / "base", 64, 12)
    ones = _with_weights(base, tmp_path / "ones", lambda n: np.ones(n))
    heavy = _with_weights(base, tmp_path / "heavy", lambda n: np.where(np.arange(n) % 2 == 0, 5.0, 0.0))
    cfg = tiny_train_config(tiny_model_dir, epochs=1)

    def trained(data, name):
        train_model(cfg, data, tmp_path / name, log=quiet, progress=False)
        return load_file(str(tmp_path / name / "model" / "model.safetensors"))

    plain, unit, weighted = trained(base, "plain"), trained(ones, "unit"), trained(heavy, "heavy")
    key = next(k for k in plain if "classifier.weight" in k)
    np.testing.assert_array_equal(plain[key], unit[key])  # weight 1 everywhere is the plain loss
    assert not np.allclose(plain[key], weighted[key])


def test_bad_weights_are_a_clear_error(make_prepared, tmp_path):
    from ticket_triage.data.io import load_splits

    bad = _with_weights(make_prepared(tmp_path / "b", 12, 6), tmp_path / "bad", lambda n: -np.ones(n))
    with pytest.raises(DataError, match="weight column"):
        load_splits(bad)
