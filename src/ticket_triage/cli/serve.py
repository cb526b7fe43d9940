"""`triage serve`, `triage db upgrade`, `triage apikey create|list|revoke` (registered on the shared app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app

db_app = typer.Typer(help="The service's database (migrations).", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for the service (stored hashed).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(apikey_app, name="apikey")

DB_HELP = (
    "database URL: sqlite:///triage.db (default) or postgresql+psycopg://user:pass@host/db [env TRIAGE_DATABASE_URL]"
)


def _settings(**overrides):
    """Settings from TRIAGE_* env vars, with the options given on the command line on top."""
    from pydantic import ValidationError

    from ..errors import ConfigError
    from ..service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


@app.command("serve")
def serve_command(
    model: Annotated[
        Optional[Path], typer.Option("--model", help="model folder written by `triage train` [env TRIAGE_MODEL_DIR]")
    ] = None,
    routing: Annotated[
        Optional[Path], typer.Option("--routing", help="routing rules YAML (default: the shipped CFPB rules)")
    ] = None,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port (default 8000)")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="no API keys needed (local use only)")] = False,
    max_batch_size: Annotated[
        Optional[int],
        typer.Option("--max-batch-size", help="most texts per model call (default 32; 1 turns batching off)"),
    ] = None,
    max_wait_ms: Annotated[
        Optional[float], typer.Option("--max-wait-ms", help="how long a batch waits to fill, in ms (default 5)")
    ] = None,
    backend: Annotated[
        Optional[str],
        typer.Option(
            "--backend",
            help="auto (the fastest on this machine: torch on a CUDA GPU, torch-bf16 on a CPU with AMX, else the ONNX export, int8 first, else torch), torch, torch-bf16, onnx, onnx-fp32 or onnx-int8 [env TRIAGE_BACKEND]",
        ),
    ] = None,
    device: Annotated[
        Optional[str],
        typer.Option(
            "--device",
            help="where PyTorch runs: auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps; with a CUDA GPU, backend auto picks PyTorch on it",
        ),
    ] = None,
    ensemble: Annotated[
        Optional[bool],
        typer.Option(
            "--ensemble/--no-ensemble",
            help="mix in the folder's TF-IDF model (default: as its triage.json says; --no-ensemble: the transformer alone)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
    registry: Annotated[
        Optional[Path],
        typer.Option(
            "--registry",
            help="model registry folder: serve its active version and follow promotes live (instead of --model) [env TRIAGE_REGISTRY_DIR]",
        ),
    ] = None,
) -> None:
    """Serve the ticket API, the triage console (/) and the docs (/docs)."""
    from ..service.cli_ops import serve

    settings = _settings(
        model_dir=model,
        routing_file=routing,
        database_url=db,
        host=host,
        port=port,
        auth=False if no_auth else None,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        backend=backend,
        device=device,
        ensemble=ensemble,
        registry_dir=registry,
    )
    serve(settings, log_level=log_level)


@db_app.command("upgrade")
def db_upgrade_command(db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None) -> None:
    """Create or migrate the service's tables (also done by `triage serve` at start)."""
    from ..service.cli_ops import upgrade_db

    settings = _settings(database_url=db)
    revision = upgrade_db(settings.database_url)
    typer.echo(f"database at revision {revision}")


@db_app.command("prune-notifications")
def db_prune_notifications_command(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="days since a notification was sent, failed or skipped")
    ] = 30.0,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Delete finished notifications (sent, failed, skipped) older than --older-than days; the
    outbox otherwise keeps them for ever. Pending ones are never deleted. Safe while serving."""
    from ..service.cli_ops import prune_notifications

    settings = _settings(database_url=db)
    n = prune_notifications(settings.database_url, older_than_days=older_than)
    typer.echo(f"deleted {n} finished notification(s) older than {older_than:g} day(s)")


@apikey_app.command("create")
def apikey_create_command(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="intake (create tickets, classify), agent (queues, feedback, export) or admin (what an agent does, plus switching model versions: /v1/admin)",
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="who or what uses the key (recorded with each correction)")],
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from ..service.cli_ops import create_key

    settings = _settings(database_url=db)
    key = create_key(settings.database_url, name=name, role=role)
    typer.echo(key)
    typer.echo(f"(role {role}, name {name!r}: store it now, it cannot be shown again)", err=True)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


@apikey_app.command("list")
def apikey_list_command(db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None) -> None:
    """List the API keys: name, role, prefix (the key's first characters), created, revoked (UTC)."""
    from ..service.cli_ops import list_keys

    settings = _settings(database_url=db)
    keys = list_keys(settings.database_url)
    if not keys:
        typer.echo("no API keys yet: create one with `triage apikey create --role ROLE --name NAME`", err=True)
        return
    rows = [("NAME", "ROLE", "PREFIX", "CREATED", "REVOKED")]
    rows += [(k["name"], k["role"], k["prefix"], _when(k["created"]), _when(k["revoked"])) for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@apikey_app.command("revoke")
def apikey_revoke_command(
    key: Annotated[str, typer.Argument(help="the key's prefix (see `triage apikey list`) or its name")],
    all_matching: Annotated[bool, typer.Option("--all", help="revoke every active key of that name")] = False,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_HELP)] = None,
) -> None:
    """Revoke an API key: requests with it get 401 (within the service's key cache time,
    TRIAGE_API_KEY_CACHE_S, 10 s by default). The revocation time is kept."""
    from ..service.cli_ops import revoke_key

    settings = _settings(database_url=db)
    for k in revoke_key(settings.database_url, key, all_matching=all_matching):
        typer.echo(f"revoked {k['prefix']} (role {k['role']}, name {k['name']!r}) at {_when(k['revoked'])} UTC")
