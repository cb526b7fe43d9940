"""The model registry: a folder of numbered model versions, one active, optionally one shadow.

Layout of ROOT:
    registry.json           the index: versions, active, shadow, and the history of promotions
    versions/v1/model/      a copy of the model folder registered as v1 (never changed afterwards)
    versions/v2/model/ ...

The index is replaced atomically (written to a temporary name, then renamed), so a reader (the
service polls its mtime) sees the old index or the new one, never half of one. Read-modify-write
cycles hold an exclusive lock on ROOT/.lock, so a CLI promote and a service promote cannot lose
each other's change. Registered folders are copied under a temporary name and renamed into place,
so a version listed in the index is always complete.

Rollback walks the promotion history: promote pushes a version, rollback pops one, and the
version below becomes active again (v1 -> v2 -> v3, rollback: v2, rollback: v1).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError

INDEX = "registry.json"
FORMAT = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelVersion:
    version: str  # "v1", "v2", ... assigned in order
    path: Path  # the model folder inside the registry (ROOT/versions/v1/model)
    created_at: str  # ISO UTC
    source: str  # where it was registered from
    metrics: dict  # the folder's metrics (e.g. macro_f1), may be {}
    comparison: dict | None  # the compare verdict that promoted it (compare.json content), or None
    note: str = ""

    def to_json(self, root: Path) -> dict:
        data = asdict(self)
        data["path"] = str(self.path.relative_to(root))  # relative: the registry folder can move
        return data

    @classmethod
    def from_json(cls, data: dict, root: Path) -> "ModelVersion":
        return cls(
            version=data["version"],
            path=root / data["path"],
            created_at=data.get("created_at", ""),
            source=data.get("source", ""),
            metrics=dict(data.get("metrics") or {}),
            comparison=data.get("comparison"),
            note=data.get("note", ""),
        )


@dataclass
class _Index:
    versions: list[dict] = field(default_factory=list)
    active: str | None = None
    shadow: str | None = None
    history: list[dict] = field(default_factory=list)  # {"at", "action", "version", "previous", "by"}

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}


def model_folder_of(path: str | Path) -> Path:
    """The model folder itself: PATH when it has triage.json, PATH/model for a run folder."""
    path = Path(path).expanduser()
    if (path / "triage.json").is_file():
        return path
    if (path / "model" / "triage.json").is_file():
        return path / "model"
    raise ConfigError(
        f"{path} is not a model folder (no triage.json in it or in {path / 'model'}); "
        "give the `model/` folder that `triage train` or `triage retrain` wrote"
    )


def folder_metrics(model_dir: Path) -> dict:
    """The headline numbers of a model folder's metrics.json (its test split's scalars), or {}."""
    try:
        data = json.loads((model_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    source = data.get("test") if isinstance(data.get("test"), dict) else data
    out: dict[str, Any] = {k: v for k, v in source.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in ("best_epoch", "train_rows"):
        if isinstance(data.get(key), (int, float)):
            out.setdefault(key, data[key])
    return out


class ModelRegistry:
    """A registry folder (see the module docstring); every method reads the index afresh."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    # -- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.index_path.is_file()

    def mtime(self) -> float | None:
        """The index's modification time (the service polls it to notice a CLI promote), or None."""
        try:
            return self.index_path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def versions(self) -> list[ModelVersion]:
        return [ModelVersion.from_json(v, self.root) for v in self._read().versions]

    def get(self, version: str) -> ModelVersion:
        return self._find(self._read(), version)

    def active(self) -> ModelVersion | None:
        index = self._read()
        return self._find(index, index.active) if index.active else None

    def shadow(self) -> ModelVersion | None:
        index = self._read()
        return self._find(index, index.shadow) if index.shadow else None

    def history(self) -> list[dict]:
        return list(self._read().history)

    def previous(self) -> ModelVersion | None:
        """The version `rollback` would make active, or None."""
        index = self._read()
        stack = _active_stack(index.history)
        return self._find(index, stack[-2]) if len(stack) >= 2 else None

    # -- changing ----------------------------------------------------------------------------
    def register(self, model_dir: str | Path, *, comparison: dict | None = None, note: str = "") -> ModelVersion:
        """Copy a model folder (or a run folder's model/) into the registry as the next version.
        The new version is not active: promote it (or set it as shadow) afterwards."""
        source = model_folder_of(model_dir)
        if comparison is not None and not isinstance(comparison, dict):
            raise ConfigError("a comparison must be a JSON object (the content of compare.json)")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked() as index:
            number = 1 + max((int(v["version"][1:]) for v in index.versions), default=0)
            name = f"v{number}"
            final = self.root / "versions" / name
            tmp = self.root / "versions" / f".{name}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(source, tmp / "model")
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ConfigError(f"cannot copy {source} into the registry {self.root}: {exc}") from None
            if final.exists():  # left by a crash between copy and index write: never listed, so stale
                shutil.rmtree(final)
            os.replace(tmp, final)
            entry = ModelVersion(
                version=name,
                path=final / "model",
                created_at=_now(),
                source=str(source.resolve()),
                metrics=folder_metrics(source),
                comparison=comparison,
                note=note,
            )
            index.versions.append(entry.to_json(self.root))
        return entry

    def promote(self, version: str, *, by: str = "cli") -> ModelVersion:
        """Make `version` the active one (a no-op if it already is)."""
        with self._locked() as index:
            entry = self._find(index, version)
            if index.active != version:
                index.history.append(
                    {"at": _now(), "action": "promote", "version": version, "previous": index.active, "by": by}
                )
                index.active = version
                if index.shadow == version:  # a promoted shadow is the live model now, not a candidate
                    index.shadow = None
        return entry

    def rollback(self, *, by: str = "cli") -> ModelVersion:
        """Make the previously active version active again; ConfigError when there is none."""
        with self._locked() as index:
            stack = _active_stack(index.history)
            if len(stack) < 2:
                raise ConfigError(
                    f"nothing to roll back to: {index.active or 'no version'} is the first active version; "
                    "promote another version instead (`triage models versions` lists them)"
                )
            target = stack[-2]
            index.history.append(
                {"at": _now(), "action": "rollback", "version": target, "previous": index.active, "by": by}
            )
            index.active = target
            entry = self._find(index, target)
        return entry

    def set_shadow(self, version: str | None, *, by: str = "cli") -> None:
        """Let `version` classify live tickets beside the active one, without routing; None stops it."""
        with self._locked() as index:
            if version is not None:
                self._find(index, version)
                if version == index.active:
                    raise ConfigError(f"{version} is the active version; a shadow is a candidate beside it")
            if index.shadow != version:
                index.history.append(
                    {"at": _now(), "action": "shadow", "version": version, "previous": index.shadow, "by": by}
                )
                index.shadow = version

    # -- internals ---------------------------------------------------------------------------
    def _find(self, index: _Index, version: str) -> ModelVersion:
        for v in index.versions:
            if v["version"] == version:
                return ModelVersion.from_json(v, self.root)
        known = ", ".join(v["version"] for v in index.versions) or "none yet (`triage models register DIR`)"
        raise ConfigError(f"unknown model version {version!r} in {self.root}; known versions: {known}")

    def _read(self) -> _Index:
        try:
            text = self.index_path.read_text()
        except FileNotFoundError:
            return _Index()
        except OSError as exc:
            raise ConfigError(f"cannot read the model registry {self.index_path}: {exc}") from None
        try:
            data = json.loads(text)
            return _Index(
                versions=list(data.get("versions", [])),
                active=data.get("active"),
                shadow=data.get("shadow"),
                history=list(data.get("history", [])),
            )
        except (ValueError, AttributeError, TypeError):
            raise ConfigError(
                f"{self.index_path} is not a registry index (invalid JSON); restore it from a backup"
            ) from None

    def _write(self, index: _Index) -> None:
        tmp = self.index_path.with_name(f".{INDEX}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index.to_json(), indent=2))
        os.replace(tmp, self.index_path)

    @contextmanager
    def _locked(self) -> Iterator[_Index]:
        """The index under an exclusive lock; written back when the block ends without error."""
        if not self.root.is_dir():
            raise ConfigError(
                f"no model registry at {self.root}: register a model first (`triage models register DIR --registry {self.root}`)"
            )
        with open(self.root / ".lock", "a+") as lock:
            _lock(lock)
            try:
                index = self._read()
                yield index
                self._write(index)
            finally:
                _unlock(lock)


def _active_stack(history: list[dict]) -> list[str]:
    """The versions made active, in order, with rolled-back ones popped."""
    stack: list[str] = []
    for event in history:
        if event.get("action") == "promote":
            stack.append(event["version"])
        elif event.get("action") == "rollback" and stack:
            stack.pop()
            if not stack or stack[-1] != event["version"]:  # an index edited by hand: trust the event
                stack.append(event["version"])
    return stack


try:  # POSIX; elsewhere the lock is a no-op (a single writer is then the operator's business)
    import fcntl

    def _lock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)

    def _unlock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

except ImportError:  # pragma: no cover

    def _lock(fh) -> None:
        pass

    def _unlock(fh) -> None:
        pass
