"""Command-line interface: thin wrappers that parse options and call one library function.

Each command group lives in its own module and registers itself on the shared `app`.
Library imports happen inside the commands, so `triage --help` stays fast.
"""

from __future__ import annotations

import sys

from rich.console import Console

from ..errors import TicketTriageError

# isort: off
from ._app import app

# Importing a command module registers its commands on `app`, in the order `triage --help` lists them.
from . import data as _data  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401
from . import predict as _predict  # noqa: E402,F401
from . import export as _export  # noqa: E402,F401
from . import serve as _serve  # noqa: E402,F401
from . import tune as _tune  # noqa: E402,F401
from . import distill as _distill  # noqa: E402,F401
from . import models as _models  # noqa: E402,F401
from . import explain as _explain  # noqa: E402,F401
from . import users as _users  # noqa: E402,F401
from . import retrain as _retrain  # noqa: E402,F401
# isort: on

_err = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `triage` and `python -m ticket_triage`: user errors become one line, exit 1."""
    try:
        app(args=argv, prog_name="triage")
    except TicketTriageError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        _err.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main"]
