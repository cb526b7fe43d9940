"""The model registry folder: register copies, promote and rollback keep a history, unknown
versions are clear errors, the index is replaced atomically; and the `triage models` commands."""

from __future__ import annotations

import json
import os
import threading

import pytest
from _model_support import run_cli

from ticket_triage.errors import ConfigError
from ticket_triage.registry import INDEX, ModelRegistry


def model_folder(path, macro_f1=0.7, run_folder=False):
    folder = path / "model" if run_folder else path
    folder.mkdir(parents=True)
    (folder / "triage.json").write_text(json.dumps({"labels": ["a", "b"]}))
    (folder / "weights.bin").write_bytes(os.urandom(64))
    metrics = {
        "history": [{"epoch": 1}],
        "best_epoch": 1,
        "test": {"macro_f1": macro_f1, "accuracy": 0.8, "recall": {}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry(tmp_path / "reg")


def test_register_copies_the_folder_with_its_metrics(registry, tmp_path):
    source = model_folder(tmp_path / "m1")
    first = registry.register(source, note="base model")
    second = registry.register(model_folder(tmp_path / "run2", 0.75, run_folder=True), comparison={"promote": True})
    assert (first.version, second.version) == ("v1", "v2")
    assert first.path == registry.root / "versions" / "v1" / "model"
    assert (first.path / "weights.bin").read_bytes() == (source / "weights.bin").read_bytes()
    (source / "weights.bin").write_bytes(b"changed later")  # the registry's copy is its own
    assert (first.path / "weights.bin").read_bytes() != b"changed later"
    assert first.metrics == {"macro_f1": 0.7, "accuracy": 0.8, "best_epoch": 1}
    assert second.path.parent.name == "v2" and second.source.endswith("run2/model")
    assert second.comparison == {"promote": True} and first.note == "base model"
    assert [v.version for v in ModelRegistry(registry.root).versions()] == ["v1", "v2"]  # read back from the index
    assert registry.get("v2") == second and registry.active() is None
    assert not list((registry.root / "versions").glob(".*"))  # no temporary copies left


def test_register_refuses_what_is_not_a_model_folder(registry, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a model folder"):
        registry.register(tmp_path / "empty")
    assert registry.versions() == []


def test_promote_rollback_and_their_history(registry, tmp_path):
    for i in range(3):
        registry.register(model_folder(tmp_path / f"m{i}"))
    for v in ("v1", "v2", "v3"):
        registry.promote(v, by="ann")
    registry.promote("v3")  # already active: no new history
    assert registry.previous().version == "v2"
    assert registry.rollback(by="bob").version == "v2" and registry.active().version == "v2"
    assert registry.rollback().version == "v1"
    with pytest.raises(ConfigError, match="nothing to roll back to: v1"):
        registry.rollback()
    registry.promote("v3")
    assert registry.rollback().version == "v1"
    history = [(h["action"], h["version"], h["previous"], h["by"]) for h in registry.history()]
    assert history == [
        ("promote", "v1", None, "ann"),
        ("promote", "v2", "v1", "ann"),
        ("promote", "v3", "v2", "ann"),
        ("rollback", "v2", "v3", "bob"),
        ("rollback", "v1", "v2", "cli"),
        ("promote", "v3", "v1", "cli"),
        ("rollback", "v1", "v3", "cli"),
    ]
    assert all(h["at"].endswith("+00:00") for h in registry.history())


def test_unknown_versions_list_the_known_ones(registry, tmp_path):
    with pytest.raises(ConfigError, match="no model registry at"):
        registry.promote("v1")
    registry.register(model_folder(tmp_path / "m"))
    for call in (lambda: registry.get("v7"), lambda: registry.promote("v7"), lambda: registry.set_shadow("v7")):
        with pytest.raises(ConfigError, match=r"unknown model version 'v7' .*known versions: v1$"):
            call()


def test_shadow_is_a_candidate_beside_the_active_version(registry, tmp_path):
    for i in range(2):
        registry.register(model_folder(tmp_path / f"m{i}"))
    registry.promote("v1")
    with pytest.raises(ConfigError, match="active version"):
        registry.set_shadow("v1")
    registry.set_shadow("v2")
    assert registry.shadow().version == "v2"
    registry.promote("v2")  # the shadow promoted: it is no longer a shadow
    assert registry.shadow() is None and registry.active().version == "v2"
    registry.set_shadow("v1")
    registry.set_shadow(None)
    assert registry.shadow() is None


def test_the_index_is_replaced_atomically_and_writers_do_not_lose_changes(registry, tmp_path):
    registry.register(model_folder(tmp_path / "m"))
    seen, stop = [], threading.Event()

    def reader():  # every read sees a whole index, never a half-written file
        while not stop.is_set():
            seen.append(json.loads((registry.root / INDEX).read_text())["format"])

    thread = threading.Thread(target=reader)
    thread.start()
    writers = [threading.Thread(target=registry.register, args=(tmp_path / "m",)) for _ in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    thread.join()
    assert seen and set(seen) == {1}
    assert [v.version for v in registry.versions()] == [f"v{i}" for i in range(1, 10)]  # none lost
    assert sorted(p.name for p in registry.root.iterdir()) == [".lock", INDEX, "versions"]


def test_a_broken_index_is_a_clear_error(registry, tmp_path):
    registry.register(model_folder(tmp_path / "m"))
    (registry.root / INDEX).write_text("{not json")
    with pytest.raises(ConfigError, match="not a registry index"):
        registry.versions()


# -- triage models register|versions|promote|rollback|shadow -----------------------------------
def test_the_models_commands(tmp_path, capsys, monkeypatch):
    reg = str(tmp_path / "reg")
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps({"verdict": "promote", "rules": []}))
    code, out, err = run_cli(["models", "register", str(model_folder(tmp_path / "m1")), "--registry", reg], capsys)
    assert code == 0 and out.strip() == "v1" and "triage models promote v1" in err
    args = ["models", "register", str(model_folder(tmp_path / "m2", 0.8)), "--registry", reg, "--promote"]
    code, out, err = run_cli([*args, "--comparison", str(compare), "--note", "retrained"], capsys)
    assert code == 0 and out.strip() == "v2" and "v2 is the active version" in err
    monkeypatch.setenv("TRIAGE_REGISTRY_DIR", reg)  # the option's environment variable
    assert run_cli(["models", "shadow", "v1"], capsys)[0] == 0
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["models", "versions"], capsys)
    assert code == 0 and "active" in out and "shadow" in out and "0.8000" in out and "retrained" in out
    assert run_cli(["models", "shadow", "--off"], capsys)[0] == 0 and ModelRegistry(reg).shadow() is None
    code, _, err = run_cli(["models", "shadow"], capsys)
    assert code == 1 and "--off" in err
    assert run_cli(["models", "promote", "v1"], capsys)[0] == 0
    assert ModelRegistry(reg).active().version == "v1" and ModelRegistry(reg).history()[-1]["by"].startswith("cli")
    code, _, err = run_cli(["models", "rollback"], capsys)
    assert code == 0 and "v2 is active again" in err
    code, _, err = run_cli(["models", "promote", "v9"], capsys)
    assert code == 1 and "known versions: v1, v2" in err and "Traceback" not in err
    assert ModelRegistry(reg).get("v2").comparison["verdict"] == "promote"
