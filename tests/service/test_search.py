"""Free-text search (GET /v1/tickets?q=): SQLite FTS5 and PostgreSQL full-text search with its
GIN index, the same answers on both (issue 18)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ticket_triage.service.search import words

TICKETS = [
    {"subject": "Escrow shortage", "body": "My mortgage servicer raised my escrow payment twice."},
    {"subject": "", "body": "The debt collector keeps calling me at work about a debt I paid."},
    {"subject": "Card", "body": "I was charged an annual card fee nobody told me about."},
    {"subject": "Refund", "body": "They charge fees on my checking account every month."},
]


@pytest.fixture
def loaded(client):
    ids = []
    for t in TICKETS:
        r = client.post("/v1/tickets", json=t)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return client, ids


def search(client, q, **params) -> list[int]:
    r = client.get("/v1/tickets", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return sorted(t["id"] for t in r.json()["items"])


def test_search_finds_words_in_subject_and_body(loaded):
    client, ids = loaded
    assert search(client, "escrow") == [ids[0]]
    assert search(client, "shortage") == [ids[0]]  # the subject
    assert search(client, "collector") == [ids[1]]
    assert search(client, "ESCROW Payment") == [ids[0]]  # case-insensitive, every word
    assert search(client, "escrow collector") == []  # all words must occur
    assert search(client, "helicopter") == []


def test_search_stems_words(loaded):
    client, ids = loaded
    assert search(client, "charges") == [ids[2], ids[3]]  # charged, charge
    assert search(client, "calls") == [ids[1]]  # calling


def test_search_combines_with_filters_and_counts(loaded):
    client, ids = loaded
    r = client.get("/v1/tickets", params={"q": "fee", "queue": "card-services"}).json()
    assert r["count"] == 1 and r["items"][0]["id"] == ids[2]
    assert client.get("/v1/tickets", params={"q": "fee", "limit": 1}).json()["count"] == 2


@pytest.mark.parametrize("q", ['"', "escrow OR debt", "NEAR(a b)", "a*", "-debt", "col:escrow", "((", "'; DROP", "\\"])
def test_search_syntax_is_never_an_error(loaded, q):
    client, _ = loaded
    r = client.get("/v1/tickets", params={"q": q})
    assert r.status_code == 200, r.text


def test_a_query_without_words_matches_nothing(loaded):
    client, _ = loaded
    assert search(client, "!!! ???") == []
    assert client.get("/v1/tickets", params={"q": "x" * 501}).status_code == 422


def test_search_follows_edits_and_deletes(loaded):
    """The FTS5 table is kept in step by triggers (PostgreSQL indexes the expression itself)."""
    client, ids = loaded
    with client.app.state.triage.engine.begin() as conn:
        conn.execute(text("UPDATE tickets SET body = 'about a helicopter' WHERE id = :id"), {"id": ids[0]})
        conn.execute(text("DELETE FROM tickets WHERE id = :id"), {"id": ids[1]})
    assert search(client, "helicopter") == [ids[0]]
    assert search(client, "mortgage") == []
    assert search(client, "collector") == []


def test_the_words_of_a_query():
    assert words("Escrow, payment!") == ["Escrow", "payment"]
    assert words("") == [] and len(words("a " * 100)) == 32


def test_postgresql_uses_the_gin_index(database_url, client):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from ticket_triage.service import crud

    with client.app.state.triage.engine.connect() as conn:
        indexes = (
            conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_tickets_fts'")).scalars().all()
        )
        assert len(indexes) == 1 and "gin" in indexes[0].lower() and "to_tsvector" in indexes[0]
    # the query's expression is the index's: with sequential scans off, the planner picks it
    with client.app.state.triage.sessions() as session:
        session.execute(text("SET enable_seqscan = off"))
        from sqlalchemy import select

        from ticket_triage.service.models import Ticket
        from ticket_triage.service.search import matching

        stmt = select(Ticket.id).where(matching(session, "escrow"))
        compiled = stmt.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(session.execute(text(f"EXPLAIN {compiled}")).scalars())
        assert "ix_tickets_fts" in plan, plan
        assert crud.list_tickets(session, q="escrow")[1] == 0


def test_sqlite_has_the_fts5_table(database_url, client):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    with client.app.state.triage.engine.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'tickets_fts'")).scalar_one()
    assert "fts5" in sql.lower()


def test_tickets_stored_before_the_migration_are_searchable(tmp_path):
    """Migration 0005 indexes the tickets already there (FTS5 'rebuild')."""
    from ticket_triage.service.db import make_engine, upgrade_database

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_database(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tickets (created_at, updated_at, channel, subject, body, metadata, status, queue, classify_attempts)"
                " VALUES ('2026-01-01', '2026-01-01', 'api', '', 'an old escrow complaint', '{}', 'routed', 'mortgage', 1)"
            )
        )
    upgrade_database(engine)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH 'escrow'")).scalars().all()
        assert found == [1]
        assert conn.execute(text("SELECT work_state FROM tickets")).scalar_one() == "open"
    engine.dispose()
