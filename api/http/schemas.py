"""HTTP schemas (pydantic), separate from the tables: what clients send and what they get."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.runtime.store import JobKind, SweepState
from distill.config import Name
from search.config import RunConfig
from search.sweep import SweepSpec

Cost = Literal["mflops", "adaptive_mflops", "params"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field("reskd", description="reskd pipeline, search, finetune or distill")
    config: RunConfig = Field(description="the run config (as `reskd run` reads it)")
    name: Name | None = None


class Problem(BaseModel):
    """An error: 400, 401, 403, 404, 409, 413, 421, 429 or 503."""

    detail: str


class FieldProblem(BaseModel):
    type: str
    loc: list[str | int] = Field(description="where: ['body', 'config', 'train', 'epochs']")
    msg: str
    input: Any = None


class ValidationProblem(BaseModel):
    """422: the request's fields, each error naming one."""

    detail: list[FieldProblem]


class CheckpointPublic(BaseModel):
    name: str = Field(description="what a job's teacher_checkpoint or student_checkpoint names")
    size: int
    sha256: str | None


class StagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    position: int
    kind: str
    key: str
    name: str
    state: str
    reused: bool
    resumed_from_epoch: int
    progress: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class ArtifactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    size: int
    url: str


class JobSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    name: str | None
    state: str
    dataset: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    sweep_id: int | None = None
    trial: int | None = None


class Progress(BaseModel):
    stage: str | None = None
    phase: str | None = Field(
        None, description="the training running within the stage (a STACNAS search has two)"
    )
    epoch: int | None = Field(None, description="epochs completed")
    epochs: int | None = None
    batch: int | None = Field(None, description="batches done in the running epoch")
    batches: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    eta_seconds: float | None = Field(None, description="until the running phase ends")
    rate: float | None = Field(None, description="units per second over the phase so far")
    unit: str | None = Field(None, description="what `rate` counts: batch or epoch")
    stages_done: int = 0


class SearchPublic(BaseModel):
    """A searched network and its provenance: how much of it the budget repair chose."""

    network: str
    strategy: str | None = None
    genotype: dict[str, Any]
    channels: int
    layers: int | None = None
    mflops: float = Field(description="the derived network's counted MFLOPs")
    budget_mflops: float | None = None
    repair: dict[str, Any] | None = Field(
        None,
        description="operations_changed and channels_changed by the budget repair (0: the "
        "search's argmax was kept), mflops_before and mflops_after",
    )
    cells: str | None = Field(None, description="URL of the cells drawn as graphs (PNG)")


class JobPublic(JobSummary):
    config: dict[str, Any]
    progress: Progress
    stages: list[StagePublic]
    metrics: list[dict[str, Any]] = Field(description="the report's rows once the job succeeded")
    searches: list[SearchPublic] = Field(
        default_factory=list, description="the networks the job searched, once it succeeded"
    )
    artifacts: list[ArtifactPublic]


class EpochPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int = Field(description="1-based, within the stage")
    loss: float
    train_accuracy: float
    eval_accuracy: float | None
    lr: float
    seconds: float
    expected_mflops: float | None = Field(description="searches: the derived network's E[MFLOPs]")


class StageMetrics(BaseModel):
    position: int
    kind: str
    key: str
    name: str
    phase: str | None = Field(
        description="the training within the stage (a STACNAS search trains two supernets)"
    )
    epochs: list[EpochPublic] = Field(
        description="in order; a stage resumed after a crash continues its earlier attempt's"
    )


class JobMetrics(BaseModel):
    job_id: int
    stages: list[StageMetrics]


class Best(BaseModel):
    model: str = Field(description="the report's row, e.g. S2 or S2 adaptive")
    accuracy: float
    mflops: float = Field(description="its MFLOPs (mean per sample for an adaptive row)")


class JobRow(JobSummary):
    """A job in a listing: where it is and the best it reached."""

    progress: Progress
    best: Best | None = Field(None, description="the most accurate student once it succeeded")


class JobList(BaseModel):
    jobs: list[JobRow]
    total: int


class ArchitecturePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int | None
    dataset: str
    teacher: str
    stage: str
    arch: str
    genotypes: list[Any] | None
    accuracy: float
    mflops: float
    adaptive_mflops: float
    params: int
    energy: float | None
    seed: int


class ArchitecturePoints(BaseModel):
    """Every architecture (the teacher left out) as columns: what a chart of all of them needs,
    without one object per point."""

    total: int
    id: list[int]
    job_id: list[int | None]
    stage: list[str]
    arch: list[str]
    accuracy: list[float]
    cost: list[float] = Field(description="the requested cost of each architecture")


class ArchitectureList(BaseModel):
    architectures: list[ArchitecturePublic]
    total: int


class ParetoPublic(BaseModel):
    dataset: str | None
    teacher: str | None
    cost: Cost
    considered: int
    front: list[ArchitecturePublic]


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    queued: int
    running: int
    version: str


# The sweep's request body is its spec (pydantic, extra fields forbidden).
SweepCreate = SweepSpec


class SweepSummary(BaseModel):
    id: int
    name: str | None
    study_name: str = Field(description="the Optuna study, in the service's database")
    state: SweepState
    dataset: str
    trials: int
    sampler: str
    cost: str
    trial_states: dict[str, int] = Field(description="how many trial jobs are in each state")
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class TrialPublic(BaseModel):
    number: int
    state: str = Field(description="Optuna's: running, complete, fail")
    params: dict[str, Any]
    accuracy: float | None = Field(description="test accuracy of S_n (a fraction, 0 to 1)")
    cost: float | None = Field(description="the sweep's cost of S_n")
    job_id: int | None
    job_state: str | None
    error: str | None


class SweepPublic(SweepSummary):
    spec: dict[str, Any]
    trial_list: list[TrialPublic]
    optuna_dashboard: str | None = Field(
        None, description="the study in optuna-dashboard, when RESKD_OPTUNA_DASHBOARD_URL is set"
    )


class SweepList(BaseModel):
    sweeps: list[SweepSummary]


class SweepPareto(BaseModel):
    sweep_id: int
    cost: str
    considered: int = Field(description="complete trials")
    front: list[TrialPublic]
