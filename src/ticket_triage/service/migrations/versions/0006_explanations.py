"""explanations: cached word attributions per ticket, model version and method

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-03

`GET /v1/tickets/{id}/explanation` computes an explanation once (seconds of CPU) and keeps it
here; the unique key lets two replicas that computed the same one at once keep a single row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explanations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("ticket_id", "model_version", "method", name="uq_explanations_key"),
    )
    op.create_index("ix_explanations_ticket_id", "explanations", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_explanations_ticket_id", table_name="explanations")
    op.drop_table("explanations")
