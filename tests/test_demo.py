"""The main job's data step: both bundled labelled files, combined, de-duplicated, then trained on."""

from __future__ import annotations

import json

import pandas as pd

from ticket_triage.demo import BUNDLED_FILES, PROFILES, bundled_data_paths, run_demo


def test_demo_prepares_both_bundled_files_and_trains_on_them(tmp_path, monkeypatch):
    import ticket_triage.training as training
    from ticket_triage.training import TrainResult

    seen = {}

    def fake_train(config, data_dir, out_dir, **_kwargs):  # the data step is under test, not training
        seen.update(config=config, data_dir=data_dir)
        return TrainResult(
            out_dir, out_dir / "model", [], {"macro_f1": 0.5}, 1, metrics={"baseline": {"macro_f1": 0.4}}
        )

    monkeypatch.setattr(training, "train_model", fake_train)
    lines = []
    run_demo(tmp_path / "demo", log=lines.append)

    data_dir = tmp_path / "demo" / "data"
    assert seen["data_dir"] == data_dir
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert [entry["name"] for entry in manifest["inputs"]] == list(BUNDLED_FILES)
    # each file contributes thousands of rows: neither is silently dropped or truncated
    assert all(entry["kept"] > 5000 for entry in manifest["inputs"]), manifest["inputs"]
    train = pd.read_parquet(data_dir / "train.parquet")
    assert set(train["source"]) == set(BUNDLED_FILES)
    assert manifest["counts"]["kept"] > 11_000 * 0.95
    config = seen["config"]
    assert config.max_train_rows == PROFILES["quick"]["max_train_rows"] and config.ensemble == "tfidf"
    assert PROFILES["full"].get("max_train_rows") is None  # --full uses every row
    assert any("test macro-F1 0.5000" in line for line in lines)


def test_bundled_files_are_there():
    assert [p.name for p in bundled_data_paths()] == list(BUNDLED_FILES)
