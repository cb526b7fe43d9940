"""`triage user create|list|disable|password`: people who sign in to the console (registered on the shared app)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ._app import app
from .serve import DB_HELP, _settings, _when

user_app = typer.Typer(
    help="People who sign in to the console (passwords stored as argon2id hashes).", no_args_is_help=True
)
app.add_typer(user_app, name="user")

PASSWORD_STDIN_HELP = "read the password from the first line of standard input (for scripts) instead of prompting"


def _password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a hidden prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@user_app.command("create")
def user_create_command(
    name: Annotated[str, typer.Argument(help="the name the person signs in with (recorded with each action)")],
    role: Annotated[
        str, typer.Option("--role", help="agent (the console) or admin (the console and admin pages)")
    ] = "agent",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help=PASSWORD_STDIN_HELP)] = False,
    no_password: Annotated[
        bool,
        typer.Option("--no-password", help="no password: the person signs in only through the trusted proxy header"),
    ] = False,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Add a person; prompts for their password (at least 10 characters)."""
    from ..service.users import create_user_at

    settings = _settings(database_url=db)
    password = None if no_password else _password(password_stdin)
    user = create_user_at(settings.database_url, username=name, role=role, password=password)
    typer.echo(f"created user {user['username']!r} (role {user['role']})")


@user_app.command("list")
def user_list_command(db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None) -> None:
    """List the users: name, role, created, disabled (UTC)."""
    from ..service.users import list_users_at

    users = list_users_at(_settings(database_url=db).database_url)
    if not users:
        typer.echo("no users yet: add one with `triage user create NAME --role agent`", err=True)
        return
    rows = [("NAME", "ROLE", "CREATED", "DISABLED")]
    rows += [(u["username"], u["role"], _when(u["created"]), _when(u["disabled"])) for u in users]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@user_app.command("disable")
def user_disable_command(
    name: Annotated[str, typer.Argument(help="the user to disable")],
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Disable a user: they cannot sign in, and their open sessions stop within the service's
    cache time (TRIAGE_API_KEY_CACHE_S, 10 s by default). Their history is kept."""
    from ..service.users import disable_user_at

    user = disable_user_at(_settings(database_url=db).database_url, username=name)
    typer.echo(f"disabled {user['username']!r} at {_when(user['disabled'])} UTC")


@user_app.command("password")
def user_password_command(
    name: Annotated[str, typer.Argument(help="the user whose password to set")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help=PASSWORD_STDIN_HELP)] = False,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Set a user's password (prompts for it)."""
    from ..service.users import set_password_at

    settings = _settings(database_url=db)
    user = set_password_at(settings.database_url, username=name, password=_password(password_stdin))
    typer.echo(f"password of {user['username']!r} set")
