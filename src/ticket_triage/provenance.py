"""What made an artefact: library versions, the source's git commit, and a hash of the data."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

from .data.io import SPLITS


def library_versions(*names: str) -> dict[str, str]:
    """ticket_triage's and Python's versions, plus each named package's (skipped when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    found = {"ticket_triage": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with "-dirty" for uncommitted changes;
    None for an installed package (no checkout) or without git."""
    here = Path(__file__).resolve().parent
    try:
        commit = _git(here, "rev-parse", "HEAD")
        dirty = _git(here, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def prepared_data_hash(data_dir: str | Path) -> str:
    """sha256 over a prepared folder's manifest and split files, in a fixed order."""
    digest = hashlib.sha256()
    for name in ("manifest.json", *(f"{split}.parquet" for split in SPLITS)):
        path = Path(data_dir) / name
        digest.update(name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def training_provenance(data_dir: str | Path) -> dict[str, Any]:
    """The `provenance` entry of a trained model folder's triage.json."""
    return {
        "versions": library_versions("torch", "transformers", "tokenizers", "numpy", "scikit-learn"),
        "data": {"path": str(Path(data_dir).resolve()), "sha256": prepared_data_hash(data_dir)},
        "git_commit": git_commit(),
    }
