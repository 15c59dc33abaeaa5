"""architectures.val_accuracy: each architecture's accuracy on D_v, what the Pareto fronts rank
on (test accuracy is carried beside it); filled from the jobs' stored results where they have
it, with the teacher's identity (``arch@digest``) where a result records one; every front
rebuilt on it (rows without a D_v accuracy are on none)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 10:20:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JOBS = sa.table("jobs", sa.column("id", sa.Integer()), sa.column("result", sa.JSON()))
ARCHITECTURES = sa.table(
    "architectures",
    sa.column("id", sa.Integer()),
    sa.column("job_id", sa.Integer()),
    sa.column("stage", sa.String()),
    sa.column("teacher", sa.String()),
    sa.column("val_accuracy", sa.Float()),
)


def upgrade() -> None:
    op.add_column("architectures", sa.Column("val_accuracy", sa.Float(), nullable=True))
    conn = op.get_bind()
    stored = conn.execute(
        sa.select(ARCHITECTURES.c.id, ARCHITECTURES.c.job_id, ARCHITECTURES.c.stage).where(
            ARCHITECTURES.c.job_id.is_not(None)
        )
    ).all()
    by_job: dict[int, list[tuple[int, str]]] = {}
    for arch_id, job_id, stage in stored:
        by_job.setdefault(int(job_id), []).append((int(arch_id), str(stage)))
    jobs = conn.execute(
        sa.select(JOBS.c.id, JOBS.c.result).where(
            JOBS.c.id.in_(sa.select(ARCHITECTURES.c.job_id).distinct())
        )
    ).all()
    for job_id, result in jobs:
        for arch_id, changed in _recorded(result, by_job.get(int(job_id), [])).items():
            conn.execute(
                sa.update(ARCHITECTURES).where(ARCHITECTURES.c.id == arch_id).values(**changed)
            )
    from api.runtime.fronts import rebuild

    rebuild(conn)


def _recorded(result: Any, archs: list[tuple[int, str]]) -> dict[int, dict[str, Any]]:
    """What a job's stored result records of its architectures: each row's D_v accuracy (by its
    model's name, the architecture's stage) and the teacher's identity."""
    if not isinstance(result, dict):
        return {}
    val = {
        r.get("model"): r["val_accuracy"]
        for r in result.get("rows") or []
        if isinstance(r, dict) and r.get("val_accuracy") is not None
    }
    teacher = result.get("teacher")
    identity = teacher.get("id") if isinstance(teacher, dict) else None
    out: dict[int, dict[str, Any]] = {}
    for arch_id, stage in archs:
        changed: dict[str, Any] = {}
        if stage in val:
            changed["val_accuracy"] = float(val[stage])
        if isinstance(identity, str) and identity:
            changed["teacher"] = identity[:200]
        if changed:
            out[arch_id] = changed
    return out


def downgrade() -> None:
    from api.runtime.fronts import rebuild

    rebuild(op.get_bind(), ranked_on="accuracy")  # the fronts 0005 ranked on test accuracy
    op.drop_column("architectures", "val_accuracy")
