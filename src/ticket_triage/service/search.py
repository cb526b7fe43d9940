"""Free-text search over tickets' subject and body, behind one function for both databases.

SQLite: the FTS5 table `tickets_fts` (migration 0005, kept in step by triggers), Porter
stemming. PostgreSQL: `to_tsvector('english', ...) @@ plainto_tsquery('english', q)`, served by
the GIN index ix_tickets_fts on the very same expression. Both read the query as plain words,
all of which must occur (stemmed: "charged" finds "charges"); operators are not interpreted, so
user input can never be a syntax error.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, column, false, text
from sqlalchemy.orm import Session

from .models import Ticket

# Must stay the expression of the GIN index in migrations/versions/0005_work_states.py.
PG_TSVECTOR = "to_tsvector('english', coalesce(tickets.subject, '') || ' ' || tickets.body)"
MAX_WORDS = 32  # a longer query is cut: every word is one more index probe
WORD = re.compile(r"\w+", re.UNICODE)


def words(query: str) -> list[str]:
    """The searchable words of `query` (letters, digits, underscore), at most MAX_WORDS."""
    return WORD.findall(query)[:MAX_WORDS]


def _fts5_query(terms: list[str]) -> str:
    # Each word as an FTS5 string ("..." with " doubled): AND of the words, no operator syntax.
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def matching(session: Session, query: str) -> ColumnElement[bool]:
    """A WHERE condition on Ticket: the ticket's subject or body holds every word of `query`.
    A query without any word matches nothing."""
    terms = words(query)
    if not terms:
        return false()
    if session.get_bind().dialect.name == "postgresql":
        return text(f"{PG_TSVECTOR} @@ plainto_tsquery('english', :q)").bindparams(q=" ".join(terms))
    return Ticket.id.in_(
        text("SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH :q")
        .bindparams(q=_fts5_query(terms))
        .columns(column("rowid"))
    )
