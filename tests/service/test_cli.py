"""`triage serve`, `triage db upgrade`, `triage apikey create`: one-line errors, keys that work."""

from __future__ import annotations

import sqlite3

import pytest
from _service_support import run_cli


def test_db_upgrade_creates_the_schema_idempotently(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        code, out, _ = run_cli(["db", "upgrade", "--db", url], capsys)
        assert code == 0 and "revision 0003_shadow_predictions" in out
    tables = {
        r[0] for r in sqlite3.connect(tmp_path / "x.db").execute("select name from sqlite_master where type='table'")
    }
    assert {"tickets", "feedback", "api_keys", "notifications", "alembic_version"} <= tables


def test_migrations_downgrade_and_upgrade(tmp_path):
    from alembic import command

    from ticket_triage.service.db import alembic_config, current_revision, make_engine, upgrade_database

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade_database(engine)
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    upgrade_database(engine)
    assert current_revision(engine) == "0003_shadow_predictions"
    engine.dispose()


def test_db_prune_notifications_deletes_only_old_finished_ones(tmp_path, capsys):
    from datetime import timedelta

    from ticket_triage.service.db import make_engine, make_sessionmaker, upgrade_database
    from ticket_triage.service.models import Notification, Ticket, utcnow

    url = f"sqlite:///{tmp_path / 'n.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    now = utcnow()
    with make_sessionmaker(engine)() as session, session.begin():
        ticket = Ticket(
            subject="",
            body="card fee",
            channel="api",
            metadata_={},
            status="routed",
            queue="cards",
            classify_attempts=1,
        )
        session.add(ticket)
        session.flush()
        for status, age_days in [
            ("sent", 40),
            ("failed", 40),
            ("skipped", 40),
            ("pending", 40),
            ("sending", 40),
            ("sent", 5),
        ]:
            when = now - timedelta(days=age_days)
            session.add(
                Notification(
                    ticket_id=ticket.id,
                    event="created",
                    kind="webhook",
                    target="http://x",
                    queue="cards",
                    payload={},
                    status=status,
                    attempts=1,
                    next_attempt_at=when,
                    created_at=when,
                    updated_at=when,
                )
            )
    engine.dispose()

    code, out, _ = run_cli(["db", "prune-notifications", "--older-than", "30", "--db", url], capsys)
    assert code == 0 and "deleted 3 " in out
    left = sorted(r for r in sqlite3.connect(tmp_path / "n.db").execute("select status from notifications"))
    assert left == [("pending",), ("sending",), ("sent",)]  # open ones whatever their age, and the recent one
    code, _, err = run_cli(["db", "prune-notifications", "--older-than", "-1", "--db", url], capsys)
    assert code != 0 and "greater than or equal to 0" in err


def test_apikey_create_prints_a_key_once_and_stores_its_hash(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    code, out, err = run_cli(["apikey", "create", "--role", "agent", "--name", "ann", "--db", url], capsys)
    assert code == 0
    key = out.strip()
    assert key.startswith("tt_") and "cannot be shown again" in err
    from ticket_triage.service.security import hash_key

    rows = sqlite3.connect(tmp_path / "k.db").execute("select name, role, key_hash from api_keys").fetchall()
    assert rows == [("ann", "agent", hash_key(key))]


def test_apikey_unknown_role_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(
        ["apikey", "create", "--role", "root", "--name", "x", "--db", f"sqlite:///{tmp_path / 'k.db'}"], capsys
    )
    assert code == 1 and "unknown role 'root'" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/model"], "model folder /no/such/model does not exist"),
        (["--db", "mysql://x"], "invalid setting database_url"),
        (["--max-batch-size", "0"], "invalid setting max_batch_size"),
    ],
)
def test_serve_errors_are_one_line(args, message, capsys):
    code, _, err = run_cli(["serve", *args], capsys)
    assert code == 1 and message in err and err.strip().count("\n") == 0


def test_serve_with_bad_routing_stops_naming_the_line(tiny_model_folder, tmp_path, capsys):
    rules = tmp_path / "bad.yaml"
    rules.write_text("routes:\n  Mortgage: {queue: m}\n  Pets: {queue: p}\n")
    code, _, err = run_cli(
        ["serve", "--model", str(tiny_model_folder), "--routing", str(rules), "--db", f"sqlite:///{tmp_path / 'a.db'}"],
        capsys,
    )
    assert code == 1 and f"{rules}:3: unknown category 'Pets'" in err and err.strip().count("\n") == 0
