"""The job store's vocabulary (kinds and states of jobs), without SQLAlchemy: the command line
offers these before anything heavy is imported."""

from __future__ import annotations

from typing import Literal

JobKind = Literal["reskd", "search", "finetune", "distill"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
SweepState = Literal["running", "succeeded", "failed", "cancelled"]
