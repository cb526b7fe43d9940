"""drift alarms; notifications.ticket_id nullable (an alarm is announced through the outbox without a ticket)

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03

SQLite cannot alter a column's nullability in place: batch mode copies the table (its indexes
and foreign key come along).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_alarms",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("window", sa.String(10), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tickets", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("reference_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reference_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_drift_alarms_created_at", "drift_alarms", ["created_at"])
    op.create_index("uq_drift_alarms_metric_window", "drift_alarms", ["metric", "window_start"], unique=True)
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("ticket_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE ticket_id IS NULL")
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("ticket_id", existing_type=sa.Integer(), nullable=False)
    op.drop_index("uq_drift_alarms_metric_window", table_name="drift_alarms")
    op.drop_index("ix_drift_alarms_created_at", table_name="drift_alarms")
    op.drop_table("drift_alarms")
