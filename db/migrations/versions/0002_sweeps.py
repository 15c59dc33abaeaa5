"""sweeps: Optuna budget sweeps; jobs get sweep_id and trial

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("study_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_name"),
    )
    op.create_index("ix_sweeps_state", "sweeps", ["state"])
    # Plain ADD COLUMN, not a batch table rebuild: on SQLite a rebuild drops ``jobs``, which
    # would fire the ON DELETE actions of stages, artifacts and architectures (data loss).
    op.add_column("jobs", sa.Column("sweep_id", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("trial", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"])
    if op.get_context().dialect.name != "sqlite":  # SQLite cannot add a constraint in place
        op.create_foreign_key(
            "fk_jobs_sweep_id_sweeps", "jobs", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint("fk_jobs_sweep_id_sweeps", "jobs", type_="foreignkey")
    op.drop_index("ix_jobs_sweep_id", table_name="jobs")
    op.drop_column("jobs", "trial")
    op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweeps_state", table_name="sweeps")
    op.drop_table("sweeps")
