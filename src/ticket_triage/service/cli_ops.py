"""Library functions behind `triage serve`, `triage db upgrade` and `triage apikey create|list|revoke`."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine

from .settings import Settings


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Build the app (fails fast on a bad model, routing file or database) and run uvicorn."""
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # Access logs carry method, path and status only; keys travel in headers/cookies, never logged.
    # X-Forwarded-* are honoured by the app itself, from TRIAGE_FORWARDED_ALLOW_IPS only (uvicorn's
    # own default would trust 127.0.0.1).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, proxy_headers=False)


@contextmanager
def _migrated(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url`, migrated to the latest schema, disposed of afterwards."""
    from .db import make_engine, upgrade_database

    engine = make_engine(database_url)
    try:
        upgrade_database(engine)
        yield engine
    finally:
        engine.dispose()


def _key_row(key) -> dict:
    """What `triage apikey list|revoke` shows of a key (never the key itself)."""
    return {
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "created": key.created_at,
        "revoked": key.revoked_at,
    }


def upgrade_db(database_url: str) -> str | None:
    """Apply migrations; returns the revision the database is at."""
    from .db import current_revision

    with _migrated(database_url) as engine:
        return current_revision(engine)


def prune_notifications(database_url: str, *, older_than_days: float) -> int:
    """Delete notifications finished (sent, failed, skipped) more than `older_than_days` ago."""
    from datetime import timedelta

    from . import crud
    from .db import make_sessionmaker
    from .models import utcnow

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        return crud.prune_notifications(session, before=utcnow() - timedelta(days=older_than_days))


def create_key(database_url: str, *, name: str, role: str) -> str:
    """Make an API key (migrating the database first if needed) and return it; only its hash is kept."""
    from .db import make_sessionmaker
    from .security import issue_api_key

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        return issue_api_key(session, name=name, role=role)


def list_keys(database_url: str) -> list[dict]:
    """Every API key (never the key itself): name, role, prefix, created, revoked (None if active)."""
    from . import crud
    from .db import make_sessionmaker

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session:
        return [_key_row(k) for k in crud.list_api_keys(session)]


def revoke_key(database_url: str, ident: str, *, all_matching: bool = False) -> list[dict]:
    """Revoke the active key(s) whose prefix or name is `ident` (or the key itself, pasted whole).
    Several active keys of one name need `all_matching`; returns the keys revoked. A running
    service refuses a revoked key within its `api_key_cache_s` (default 10 s)."""
    from ..errors import ConfigError
    from . import crud
    from .db import make_sessionmaker
    from .security import KEY_PREFIX, hash_key

    ident = ident.strip()
    if not ident:
        raise ConfigError("give the key's prefix (from `triage apikey list`) or its name")
    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        key_hash = hash_key(ident) if ident.startswith(KEY_PREFIX) and len(ident) > 16 else None
        matches = crud.find_api_keys(session, ident=ident, key_hash=key_hash)
        if not matches:
            raise ConfigError(f"no API key has the prefix or name {ident!r}: see `triage apikey list`")
        active = [k for k in matches if k.revoked_at is None]
        if not active:
            when = max(k.revoked_at for k in matches)
            raise ConfigError(f"the API key {ident!r} is already revoked (on {when:%Y-%m-%d %H:%M} UTC)")
        if len(active) > 1 and not all_matching:
            prefixes = ", ".join(k.prefix for k in active)
            raise ConfigError(
                f"{len(active)} active keys match {ident!r} (prefixes {prefixes}): give one prefix, or --all to revoke them all"
            )
        return [_key_row(crud.revoke_api_key(session, key=k)) for k in active]
