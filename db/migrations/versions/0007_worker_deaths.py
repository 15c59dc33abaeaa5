"""jobs.worker_deaths: the attempts of a job whose worker died (its lease expired), counted apart
from its attempts (a worker that shuts down hands its job back without dying), so that a job
whose worker dies ``max_attempts`` times fails instead of being handed out without end

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("worker_deaths", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("jobs", "worker_deaths")
