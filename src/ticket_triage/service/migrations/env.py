"""Alembic environment: the engine comes from `db.alembic_config` (no alembic.ini, no URL here)."""

from alembic import context

from ticket_triage.service.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover
    raise SystemExit("offline migrations are not supported: run `triage db upgrade --db URL`")
run_migrations_online()
