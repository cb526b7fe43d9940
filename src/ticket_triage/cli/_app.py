"""The Typer application object. Command modules import it and register their commands."""

import typer

app = typer.Typer(
    name="triage",
    help="Classify support tickets with a fine-tuned transformer and route them to the right team.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
