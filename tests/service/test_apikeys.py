"""`triage apikey list|revoke`, revoked keys refused with 401, and migration 0001 -> 0002; on
SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import pytest
from _service_support import PG_URL, issue_key, run_cli
from sqlalchemy import create_engine, inspect, text

from ticket_triage.service.cli_ops import revoke_key

TICKET = {"body": "The debt collector keeps calling me at work."}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


# -- revocation ------------------------------------------------------------------------------------
def test_a_revoked_key_gets_401_saying_it_was_revoked(make_client, database_url):
    client = make_client(auth=True, api_key_cache_s=0.2)
    intake, agent = issue_key(client, "intake", "web-form"), issue_key(client, "agent", "ann")
    assert client.post("/v1/tickets", json=TICKET, headers=bearer(intake)).status_code == 201
    assert client.get("/v1/notifications", headers=bearer(agent)).status_code == 200

    revoked = revoke_key(database_url, intake[:10])  # as `triage apikey revoke` does, from another process
    assert [(k["name"], k["role"]) for k in revoked] == [("web-form", "intake")] and revoked[0]["revoked"] is not None
    time.sleep(0.3)  # the documented delay: api_key_cache_s
    r = client.post("/v1/tickets", json=TICKET, headers=bearer(intake))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert "revoked" in r.headers["www-authenticate"]
    assert client.post("/v1/classify", json={"texts": ["card"]}, headers={"X-API-Key": intake}).status_code == 401
    # the other key still works; an unknown key still gets the plain message
    assert client.get("/v1/tickets", headers=bearer(agent)).status_code == 200
    r = client.get("/v1/tickets", headers=bearer(agent + "x"))
    assert r.status_code == 401 and "revoked" not in r.json()["detail"]


def test_revocation_is_immediate_without_the_key_cache(make_client, database_url):
    client = make_client(auth=True, api_key_cache_s=0)
    agent = issue_key(client, "agent", "ann")
    assert client.get("/v1/tickets", headers=bearer(agent)).status_code == 200
    revoke_key(database_url, "ann")
    assert client.get("/v1/tickets", headers=bearer(agent)).status_code == 401


def test_a_revoked_key_cannot_sign_in_to_the_console(make_client, database_url):
    client = make_client(auth=True, api_key_cache_s=0)
    agent = issue_key(client, "agent", "ann")
    revoke_key(database_url, agent)  # the whole key works as an identifier too
    r = client.post("/console/login", data={"key": agent}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?denied=1"


def test_apikey_list_and_revoke_commands(database_url, capsys):
    code, out, _ = run_cli(["apikey", "create", "--role", "intake", "--name", "web-form", "--db", database_url], capsys)
    assert code == 0
    intake = out.strip()
    for _ in range(2):
        assert run_cli(["apikey", "create", "--role", "agent", "--name", "ann", "--db", database_url], capsys)[0] == 0

    code, out, _ = run_cli(["apikey", "list", "--db", database_url], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "PREFIX", "CREATED", "REVOKED"] and len(lines) == 4
    assert lines[1].split()[:3] == ["web-form", "intake", intake[:10]] and lines[1].split()[-1] == "-"
    assert intake not in out  # never the key itself

    code, _, err = run_cli(["apikey", "revoke", "ann", "--db", database_url], capsys)
    assert code == 1 and "2 active keys match 'ann'" in err and err.strip().count("\n") == 0
    code, out, _ = run_cli(["apikey", "revoke", intake[:10], "--db", database_url], capsys)
    assert code == 0 and f"revoked {intake[:10]}" in out and "'web-form'" in out
    code, _, err = run_cli(["apikey", "revoke", "web-form", "--db", database_url], capsys)
    assert code == 1 and "already revoked" in err
    code, _, err = run_cli(["apikey", "revoke", "nobody", "--db", database_url], capsys)
    assert code == 1 and "no API key has the prefix or name 'nobody'" in err
    code, out, _ = run_cli(["apikey", "revoke", "ann", "--all", "--db", database_url], capsys)
    assert code == 0 and out.count("revoked ") == 2

    code, out, _ = run_cli(["apikey", "list", "--db", database_url], capsys)
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert all(r[-1] != "-" for r in rows) and len(rows) == 3  # every key shows its revocation time


def test_apikey_list_of_an_empty_database(tmp_path, capsys):
    code, out, err = run_cli(["apikey", "list", "--db", f"sqlite:///{tmp_path / 'e.db'}"], capsys)
    assert code == 0 and out == "" and "no API keys yet" in err


# -- migration 0001 -> 0002 ------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database with no tables at all (PostgreSQL: made for this test, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    if not PG_URL:
        pytest.skip("TRIAGE_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    name = f"triage_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_db_upgrade_migrates_a_0001_database_keeping_its_data(empty_database_url, capsys):
    from ticket_triage.service.db import current_revision, make_engine, upgrade_database

    engine = make_engine(empty_database_url)
    upgrade_database(engine, "0001")
    assert current_revision(engine) == "0001" and "notifications" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tickets (created_at, updated_at, channel, subject, body, metadata, status, queue, classify_attempts)"
                " VALUES (:t, :t, 'api', '', 'old ticket', '{}', 'routed', 'mortgage', 1)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (name, role, key_hash, prefix, created_at) VALUES ('old', 'agent', :h, 'tt_oldkey0', :t)"
            ),
            {"h": "0" * 64, "t": "2026-01-01 00:00:00"},
        )
    engine.dispose()

    code, out, _ = run_cli(["db", "upgrade", "--db", empty_database_url], capsys)
    assert code == 0 and "revision 0003_shadow_predictions" in out

    engine = make_engine(empty_database_url)
    insp = inspect(engine)
    assert "notifications" in insp.get_table_names()
    assert {"ix_notifications_due", "ix_notifications_ticket_id"} <= {
        i["name"] for i in insp.get_indexes("notifications")
    }
    assert "ix_api_keys_prefix" in {i["name"] for i in insp.get_indexes("api_keys")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM tickets")).scalar_one() == "old ticket"
    engine.dispose()
    # the old key is listed, and can be revoked, after the upgrade
    code, out, _ = run_cli(["apikey", "revoke", "tt_oldkey0", "--db", empty_database_url], capsys)
    assert code == 0 and "revoked tt_oldkey0" in out
