"""work states (open/assigned/done), confirmations, work events, users, full-text search

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-03

Search: SQLite gets an FTS5 table over tickets (external content, kept in step by triggers);
PostgreSQL a GIN index on the same to_tsvector expression that service/search.py queries.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Must stay byte-for-byte the expression in service/search.py, or PostgreSQL ignores the index.
PG_TSVECTOR = "to_tsvector('english', coalesce(subject, '') || ' ' || body)"

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE tickets_fts USING fts5(subject, body, content='tickets', content_rowid='id', "
    "tokenize='porter unicode61')",
    "CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN "
    "INSERT INTO tickets_fts(rowid, subject, body) VALUES (new.id, new.subject, new.body); END",
    "CREATE TRIGGER tickets_fts_delete AFTER DELETE ON tickets BEGIN "
    "INSERT INTO tickets_fts(tickets_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, old.body); END",
    # Only a change of the text touches the index (status and queue change far more often).
    "CREATE TRIGGER tickets_fts_update AFTER UPDATE OF subject, body ON tickets BEGIN "
    "INSERT INTO tickets_fts(tickets_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, old.body); "
    "INSERT INTO tickets_fts(rowid, subject, body) VALUES (new.id, new.subject, new.body); END",
    "INSERT INTO tickets_fts(tickets_fts) VALUES ('rebuild')",  # the tickets stored before this migration
]


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("work_state", sa.String(10), nullable=False, server_default="open"))
        batch.add_column(sa.Column("assignee", sa.String(200), nullable=True))
    op.create_index("ix_tickets_work_state", "tickets", ["work_state"])
    op.create_index("ix_tickets_channel", "tickets", ["channel"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("kind", sa.String(12), nullable=False, server_default="correction"))
        batch.add_column(sa.Column("model_version", sa.String(200), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index("ix_feedback_ticket_key", "feedback", ["ticket_id", "idempotency_key"], unique=True)

    op.create_table(
        "work_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_work_events_ticket_id", "work_events", ["ticket_id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )

    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(f"CREATE INDEX ix_tickets_fts ON tickets USING GIN ({PG_TSVECTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS tickets_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS tickets_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_tickets_fts")
    op.drop_table("users")
    op.drop_index("ix_work_events_ticket_id", table_name="work_events")
    op.drop_table("work_events")
    op.drop_index("ix_feedback_ticket_key", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("idempotency_key")
        batch.drop_column("model_version")
        batch.drop_column("kind")
    op.drop_index("ix_tickets_channel", table_name="tickets")
    op.drop_index("ix_tickets_work_state", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("assignee")
        batch.drop_column("work_state")
