"""HTTP schemas (pydantic), separate from the tables: what clients send and what they get."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.runtime.store import JobKind, SweepState
from distill.config import Name
from search.config import RunConfig
from search.sweep import SweepSpec

Cost = Literal["mflops", "adaptive_mflops", "params"]
Role = Literal["admin", "member", "viewer"]
Priority = Annotated[
    int,
    Field(
        ge=-100,
        le=100,
        description="claims take higher priorities first, then the owner with the least device "
        "time over the last day (fair share)",
    ),
]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field("reskd", description="reskd pipeline, search, finetune or distill")
    config: RunConfig = Field(description="the run config (as `reskd run` reads it)")
    name: Name | None = None
    priority: Priority = 0


class Problem(BaseModel):
    """An error: 400, 401, 403, 404, 409, 413, 415, 421, 429 or 503."""

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
    owner: str | None = Field(None, description="the user who submitted it (None: an admin's)")
    priority: int = 0
    held: str | None = Field(
        None,
        description="why a queued job waits: its owner is disabled or at a quota (running jobs, "
        "device-hours in the last 24 h), or other jobs come first (higher priority, an owner "
        "who used less device time, submitted earlier); None once it is next or not queued",
    )


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
    derived_from: str | None = Field(
        None,
        description="the stored search (stage) this network was derived from at its own "
        "budget, when it shared one supernet with other budgets; None: its own search",
    )


class Best(BaseModel):
    """A job's best student, chosen on D_v: the report's ``deploy`` (what the export ships), else
    the row most accurate on D_v. Its test accuracy is shown beside, never chosen on."""

    model: str = Field(description="the report's row, e.g. S2 or S2 adaptive")
    val_accuracy: float | None = Field(description="on D_v (a fraction, 0 to 1): what chose it")
    accuracy: float = Field(description="on the test set (a fraction, 0 to 1): reported beside")
    mflops: float = Field(description="its MFLOPs (mean per sample with adaptive inference)")
    deployed: bool = Field(
        False, description="the report's deploy: S_k as the export ships it, sample-adaptive"
    )


class JobPublic(JobSummary):
    config: dict[str, Any]
    progress: Progress
    best: Best | None = Field(None, description="the best student on D_v once it succeeded")
    stages: list[StagePublic]
    metrics: list[dict[str, Any]] = Field(description="the report's rows once the job succeeded")
    searches: list[SearchPublic] = Field(
        default_factory=list, description="the networks the job searched, once it succeeded"
    )
    teacher: dict[str, Any] | None = Field(
        None,
        description="the teacher's identity (arch, kind, checkpoint digest, id) and its D_v "
        "accuracy, measured by the teacher gate before anything trained",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what to know of the outcome: a weak teacher allowed to run, a res-student "
        "that lowered D_v accuracy, a budget repair that changed the search's operations",
    )
    stop_reason: str | None = Field(
        None,
        description="why a ResKD run has the res-students it has: Energy(S_i, D_v) over ratio x "
        "Energy(T, D_v), max_stages reached or res_students exhausted",
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


class JobRow(JobSummary):
    """A job in a listing: where it is and the best it reached."""

    progress: Progress
    best: Best | None = Field(None, description="the best student on D_v once it succeeded")


class JobList(BaseModel):
    jobs: list[JobRow]
    total: int


class ArchitecturePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int | None
    dataset: str
    teacher: str = Field(
        description="the teacher's identity, arch@digest (the architecture alone in rows stored "
        "before identities were recorded)"
    )
    stage: str
    arch: str
    genotypes: list[Any] | None
    val_accuracy: float | None = Field(
        description="on D_v (a fraction): what fronts rank on; None in rows stored before it "
        "was recorded, which are on no front"
    )
    accuracy: float = Field(description="on the test set (a fraction): reported, never ranked on")
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
    val_accuracy: list[float | None] = Field(
        description="on D_v, what fronts rank on (None: stored before it was recorded)"
    )
    accuracy: list[float] = Field(description="on the test set")
    cost: list[float] = Field(description="the requested cost of each architecture")


class ArchitectureList(BaseModel):
    architectures: list[ArchitecturePublic]
    total: int


class ParetoPublic(BaseModel):
    dataset: str | None
    teacher: str | None
    cost: Cost
    ranked_on: Literal["val_accuracy"] = Field(
        "val_accuracy", description="the accuracy the front maximises: on D_v, never the test set's"
    )
    considered: int = Field(description="architectures with a D_v accuracy that matched")
    front: list[ArchitecturePublic]


class ArchitectureGroup(BaseModel):
    """One (dataset, teacher identity): the architectures whose accuracies may be compared."""

    dataset: str
    teacher: str
    architectures: int = Field(description="stored rows, the teacher's own included")
    ranked: int = Field(description="of them, those with a D_v accuracy (the front's candidates)")
    latest_job_id: int | None = Field(description="the newest job that stored rows here")


class ArchitectureGroups(BaseModel):
    groups: list[ArchitectureGroup] = Field(
        description="newest first: by the newest architecture with a D_v accuracy"
    )
    default: ArchitectureGroup | None = Field(
        description="what the dashboard and `reskd pareto` show unless told: the latest job's"
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="ok, or unavailable (HTTP 503) when the service cannot store what it makes"
    )
    database: str
    queued: int
    running: int
    version: str
    problems: list[str] = Field(
        default_factory=list, description="what cannot be written (the artifact root, the database)"
    )


class SweepCreate(SweepSpec):
    """The sweep's request body: its spec (extra fields forbidden) and its trials' priority."""

    priority: Priority = 0

    def spec(self) -> SweepSpec:
        return SweepSpec.model_validate(self.model_dump(exclude={"priority"}))


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
    owner: str | None = Field(None, description="the user who started it (None: an admin's)")
    priority: int = 0


class TrialPublic(BaseModel):
    number: int
    state: str = Field(description="Optuna's: running, complete, fail")
    params: dict[str, Any]
    val_accuracy: float | None = Field(
        description="D_v accuracy of S_n (a fraction, 0 to 1): the objective the sweep ranks on"
    )
    accuracy: float | None = Field(
        description="test accuracy of S_n (a fraction, 0 to 1): reported, never an objective"
    )
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
    ranked_on: Literal["val_accuracy"] = Field(
        "val_accuracy", description="the accuracy the front maximises: on D_v, never the test set's"
    )
    considered: int = Field(description="complete trials with a D_v accuracy")
    unranked: int = Field(0, description="complete trials without one (run before it was kept)")
    front: list[TrialPublic]


class DatasetPublic(BaseModel):
    """A dataset the service can use: a job's config names it by ``dataset`` and ``root``."""

    name: str
    kind: str = Field(
        description="`shipped` for data shipped in a package, else the registered dataset whose "
        "survey found it (`imagefolder` for an upload or a folder, `cifar10`, `cifar100`, or a "
        "plug-in's)"
    )
    source: Literal["package", "upload", "data_root"] = Field(
        description="shipped in a package, uploaded with POST /v1/datasets, or found directly "
        "under a data root"
    )
    dataset: str = Field(description="the job config's `dataset`")
    root: str | None = Field(description="the job config's `root` (none for shipped data)")
    num_classes: int
    classes: list[str] = Field(description="class names in label order (0, 1, ...)")
    train_images: int
    test_images: int = Field(description="images of val/ or test/ (the official test split)")
    width: int | None = Field(description="pixels, of the first image (folders: read, not decoded)")
    height: int | None
    mixed_sizes: bool = Field(
        description="folders: sizes differ among a sample of images (one per class); "
        "width and height are the first image's"
    )
    channels: int = Field(description="channels the networks see (folders are read as RGB)")
    mode: str | None = Field(description="the first image file's Pillow mode (L, RGB, ...)")
    problem: str | None = Field(
        None, description="why a job cannot use it as it is (none: it loads)"
    )
