"""The real embedded all-MiniLM-L6-v2 on a few hundred real complaints (slower: about a minute)."""

from __future__ import annotations

import json

import pytest

from ticket_triage.modeling import embedded_model_path, load_model_folder
from ticket_triage.training import TrainConfig, train_model

pytestmark = pytest.mark.integration


def test_embedded_model_learns_the_categories(tmp_path, make_prepared):
    data = make_prepared(tmp_path / "data", n_train=360, n_eval=90, seed=1)
    config = TrainConfig(
        epochs=1,
        batch_size=8,
        max_length=96,
        lr=1.5e-4,
        warmup_ratio=0.1,
        class_weights="balanced",
        seed=1,
        baseline=True,
    )
    result = train_model(config, data, tmp_path / "run", log=lambda *_: None)
    chance = 1 / 6
    assert result.test["macro_f1"] > chance + 0.3, result.test
    assert result.metrics["baseline"]["macro_f1"] > chance
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["model"] == "embedded:all-MiniLM-L6-v2"
    model, tokenizer, meta = load_model_folder(tmp_path / "run" / "model")
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert meta.labels[0] == "Credit Reporting" and tokenizer.is_fast
    assert embedded_model_path()
