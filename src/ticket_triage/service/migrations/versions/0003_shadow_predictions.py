"""shadow_predictions: what a candidate model predicted for live tickets (never used for routing)

Revision ID: 0003_shadow_predictions
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_predictions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("active_version", sa.String(200), nullable=True),
        sa.Column("active_category", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shadow_predictions_ticket_id", "shadow_predictions", ["ticket_id"])
    op.create_index("ix_shadow_predictions_version", "shadow_predictions", ["model_version", "ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_shadow_predictions_version", table_name="shadow_predictions")
    op.drop_index("ix_shadow_predictions_ticket_id", table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
