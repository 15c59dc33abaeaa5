"""pareto_groups and pareto_members: each (dataset, teacher)'s row counts and Pareto fronts,
kept with the architectures so a Pareto query reads the fronts, not the archive; an existing
archive's fronts are built by 0006, which adds the D_v accuracy they rank on

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 23:58:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pareto_groups",
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("teacher", sa.String(length=200), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("rows_without_teacher", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "teacher"),
    )
    op.create_table(
        "pareto_members",
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("teacher", sa.String(length=200), nullable=False),
        sa.Column("cost", sa.String(length=32), nullable=False),
        sa.Column("with_teacher", sa.Boolean(), nullable=False),
        sa.Column("architecture_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["architecture_id"], ["architectures.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset", "teacher", "cost", "with_teacher", "architecture_id"),
    )
    op.create_index(
        "ix_pareto_members_lookup",
        "pareto_members",
        ["cost", "with_teacher", "dataset", "teacher"],
    )


def downgrade() -> None:
    op.drop_index("ix_pareto_members_lookup", table_name="pareto_members")
    op.drop_table("pareto_members")
    op.drop_table("pareto_groups")
