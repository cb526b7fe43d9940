"""`triage data ...`: prepare splits from a CFPB export, download the CFPB file."""

import typer

from ._app import app

data_app = typer.Typer(help="Prepare training data from the CFPB complaint database or other ticket exports.", no_args_is_help=True)
app.add_typer(data_app, name="data")
