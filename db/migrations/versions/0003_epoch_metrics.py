"""epoch_metrics: every epoch of every stage (loss, accuracy, lr, seconds, E[MFLOPs] of searches)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("train_accuracy", sa.Float(), nullable=False),
        sa.Column("eval_accuracy", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("expected_mflops", sa.Float(), nullable=True),
        sa.Column("phase", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stage_id"], ["stages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_epoch_metrics_job_id", "epoch_metrics", ["job_id"])
    op.create_index("ix_epoch_metrics_stage_id", "epoch_metrics", ["stage_id"])


def downgrade() -> None:
    op.drop_index("ix_epoch_metrics_stage_id", table_name="epoch_metrics")
    op.drop_index("ix_epoch_metrics_job_id", table_name="epoch_metrics")
    op.drop_table("epoch_metrics")
