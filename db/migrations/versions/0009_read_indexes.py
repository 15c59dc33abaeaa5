"""Indexes the API's reads need: the jobs list filtered by kind or dataset (its page and its
count, newest first), and the owners' usage (what a queued job's reason and the claim order
read): the jobs with an attempt running and those settled within the fair-share window, as two
ranges of one index that holds every column the usage reads (SQLite read every job's row)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-22 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_jobs_kind_id": ["kind", "id"],
    "ix_jobs_dataset_id": ["dataset", "id"],
    "ix_jobs_usage": ["ran_from", "settled_at", "owner", "state", "lease_until", "device_seconds"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "jobs", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="jobs")
