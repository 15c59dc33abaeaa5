"""A service a team shares: users and their API keys, owners and priorities of jobs and sweeps,
each job's device time (for quotas and fair share), who uploaded what, and an audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("max_running_jobs", sa.Integer()),
        sa.Column("max_device_hours_per_day", sa.Float()),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("lookup", sa.String(16), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("label", sa.String(200)),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME),
        sa.Column("revoked_at", UTC_TIME),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "uploads",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(64)),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_uploads_owner", "uploads", ["owner"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(250), nullable=False),
        sa.Column("detail", sa.JSON()),
    )
    for column in ("at", "actor", "action"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    # plain ALTER TABLE (a batch copy of jobs on SQLite would fire its foreign keys' cascades)
    for table in ("jobs", "sweeps"):
        op.add_column(table, sa.Column("owner", sa.String(64)))
        op.add_column(
            table, sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
        )
        op.create_index(f"ix_{table}_owner", table, ["owner"])
    op.add_column(
        "jobs", sa.Column("device_seconds", sa.Float(), nullable=False, server_default="0")
    )
    op.add_column("jobs", sa.Column("ran_from", sa.Float()))
    op.add_column("jobs", sa.Column("settled_at", sa.Float()))
    op.create_index("ix_jobs_settled_at", "jobs", ["settled_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_settled_at", "jobs")
    for column in ("settled_at", "ran_from", "device_seconds"):
        op.drop_column("jobs", column)
    for table in ("jobs", "sweeps"):
        op.drop_index(f"ix_{table}_owner", table)
        op.drop_column(table, "priority")
        op.drop_column(table, "owner")
    op.drop_table("audit_log")
    op.drop_table("uploads")
    op.drop_index("ix_api_keys_user_id", "api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
