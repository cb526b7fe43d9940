"""Library functions behind `triage serve`, `triage db upgrade` and `triage apikey create`."""

from __future__ import annotations

import logging

from .settings import Settings


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Build the app (fails fast on a bad model, routing file or database) and run uvicorn."""
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # Access logs carry method, path and status only; keys travel in headers/cookies, never logged.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, proxy_headers=False)


def upgrade_db(database_url: str) -> str | None:
    """Apply migrations; returns the revision the database is at."""
    from .db import current_revision, make_engine, upgrade_database

    engine = make_engine(database_url)
    try:
        upgrade_database(engine)
        return current_revision(engine)
    finally:
        engine.dispose()


def create_key(database_url: str, *, name: str, role: str) -> str:
    """Make an API key (migrating the database first if needed) and return it; only its hash is kept."""
    from .db import make_engine, make_sessionmaker, upgrade_database
    from .security import issue_api_key

    engine = make_engine(database_url)
    try:
        upgrade_database(engine)
        with make_sessionmaker(engine)() as session, session.begin():
            return issue_api_key(session, name=name, role=role)
    finally:
        engine.dispose()
