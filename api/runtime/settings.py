"""The service's one settings object, from ``RESKD_*`` environment variables (or arguments)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def check_allocator(value: str, name: str = "allocator") -> str:
    """``value`` when it is auto, system or an existing file, else a ValueError naming ``name``."""
    if value in ("auto", "system") or Path(value).is_file():
        return value
    raise ValueError(f"{name}: {value!r} is not auto, system or an existing shared library file")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESKD_", extra="ignore")

    artifact_root: Path = Field(Path("runs/service"), description="files of jobs and stages")
    database_url: str | None = Field(
        None, description="any SQLAlchemy URL; default SQLite at <artifact_root>/reskd.db"
    )
    token: str | None = Field(None, description="bearer token; without one, 127.0.0.1 only")
    optuna_dashboard_url: str | None = Field(
        None,
        description="where `optuna-dashboard <database URL>` serves this service's database "
        "(e.g. http://127.0.0.1:8080): a sweep then links its study there",
    )
    host: str = "127.0.0.1"
    port: int = 8321
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides the bound host (and, on 127.0.0.1, "
        "localhost); ['*'] accepts any. Guards a token-less service against DNS rebinding",
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="directories whose files jobs over the API may read: a job's `root` and "
        "checkpoint paths may name files under them (`reskd serve --data-root DIR` adds one); "
        "GET /v1/datasets lists the image folders and CIFAR roots at or directly under each. "
        "Datasets uploaded with POST /v1/datasets are always allowed",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body (413)")
    max_checkpoint_bytes: int = Field(
        1 << 30, ge=1024, description="largest checkpoint upload (POST /v1/checkpoints)"
    )
    max_dataset_bytes: int = Field(
        1 << 30, ge=1024, description="largest dataset archive upload (POST /v1/datasets)"
    )
    max_dataset_unpacked_bytes: int = Field(
        4 << 30,
        ge=1024,
        description="largest total of an uploaded archive's files once unpacked: an archive "
        "that declares or inflates to more is refused (413) before or while it is unpacked",
    )
    max_dataset_members: int = Field(
        250_000, ge=1, description="most entries (files and folders) of an uploaded archive"
    )
    max_dataset_inflation: float = Field(
        100.0,
        ge=1,
        description="how many times its own size an uploaded archive's files may declare in all "
        "(images are compressed already; a zip bomb declares thousands of times): more is "
        "refused (413) before anything is unpacked",
    )
    max_json_depth: int = Field(
        32, ge=4, le=1000, description="deepest nesting of arrays and objects in a JSON body (422)"
    )
    max_json_members: int = Field(
        20_000,
        ge=100,
        description="most members (object keys and array items in all) of a JSON body (413)",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
        "are believed (the client address of the per-client stream limit); none by default, "
        "so a client cannot pose as many",
    )
    max_connections: int = Field(
        512,
        ge=8,
        description="open HTTP connections: requests beyond it are answered 503 and a "
        "connection past it is closed at once (keep it under the open-files limit)",
    )
    request_header_seconds: float = Field(
        10.0,
        gt=0,
        description="a request's line and headers must arrive within this long of the "
        "connection opening or of the request's first byte (408, then closed)",
    )
    request_idle_seconds: float = Field(
        30.0, gt=0, description="a request body silent this long closes its connection"
    )
    keep_alive_seconds: int = Field(
        5, ge=1, description="how long an idle connection between requests is kept open"
    )
    max_header_bytes: int = Field(
        65_536, ge=4096, description="largest request line and headers together (431)"
    )
    max_streams_per_client: int = Field(
        8, ge=1, description="open event streams one client address may hold (429 beyond)"
    )
    max_streams: int = Field(256, ge=1, description="open event streams in all (503 beyond)")
    stream_poll_seconds: float = Field(0.5, gt=0, description="how often a stream looks")
    keepalive_seconds: float = Field(15.0, gt=0, description="an event stream's keep-alive")
    pareto_cache_entries: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="Pareto responses kept per API process, each valid while the stored fronts "
        "do not change (0: every query reads the fronts)",
    )
    workers: int | None = Field(None, description="default: one per visible GPU, else 1 CPU")
    worker_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of each local worker; default: the cores shared among the "
        "workers (a worker's float sums, and so its results, follow its thread count)",
    )
    allocator: str = Field(
        "auto",
        description="memory allocator preloaded (LD_PRELOAD) into local worker processes: auto "
        "(gperftools' tcmalloc when installed, e.g. Debian's libtcmalloc-minimal4, else the "
        "system's), system, or the path of an allocator's shared library. It changes no "
        "result, only the cost of the many small allocations of small networks' training",
    )
    device: str = "auto"
    lease_seconds: float = Field(20.0, description="a worker silent this long is presumed dead")
    max_attempts: int = Field(
        3,
        ge=1,
        le=1000,
        description="times a job's worker may die (stop renewing its lease) before the job fails "
        "with 'worker died N times' instead of being handed out again",
    )
    default_max_running_jobs: int | None = Field(
        None,
        ge=1,
        description="jobs a user may run at once unless the user has a max_running_jobs of "
        "their own (None: unlimited); the claim passes over the queued jobs of a user at it",
    )
    default_device_hours_per_day: float | None = Field(
        None,
        gt=0,
        description="device-hours a user may use in any 24 h unless the user has a "
        "max_device_hours_per_day of their own (None: unlimited): the device time of their "
        "attempts that ended within the last 24 h and of their running ones",
    )
    fair_share_hours: float = Field(
        24.0,
        gt=0,
        description="the window of a user's recent device time that orders the claims of "
        "jobs of equal priority: the jobs of the user who used least come first",
    )
    worker_memory_bytes: int | None = Field(
        None,
        ge=1 << 30,
        description="address space of each local worker process (RLIMIT_AS; off by default): a "
        "job that needs more fails with an out-of-memory error naming this limit instead of "
        "taking the machine's memory. A worker needs about 4 GiB once PyTorch is loaded; a CUDA "
        "worker maps far more address space than it uses, so leave it off on GPUs",
    )
    max_job_params: int = Field(
        2_000_000_000,
        ge=1,
        description="most parameters of any one network of a job (its teacher, S0, a "
        "res-student, a search's supernet), counted at submit without allocating them: a "
        "larger one is a 422 naming the network",
    )
    max_job_mflops: float = Field(
        1e6,
        gt=0,
        description="most MFLOPs (multiply-accumulates of one sample's forward pass, in "
        "millions) of any one network of a job, counted at submit as max_job_params is",
    )
    heartbeat_seconds: float = Field(1.0, description="lease renewal and cancel polling period")
    poll_seconds: float = Field(0.5, description="idle workers look for work this often")
    ray_address: str | None = Field(
        None, description="a Ray cluster (host:port); jobs then run as Ray tasks (pip .[ray])"
    )
    ray_cpus_per_task: float = Field(1.0, description="CPUs a Ray task asks for without GPUs")
    ray_max_retries: int = Field(3, description="Ray retries of a task whose worker died")

    @field_validator("allocator")
    @classmethod
    def _allocator_known(cls, value: str) -> str:
        return check_allocator(value)

    @property
    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.artifact_root / 'reskd.db').resolve()}"

    @property
    def stages_dir(self) -> Path:
        return self.artifact_root / "stages"

    @property
    def checkpoints_dir(self) -> Path:
        """Where uploaded checkpoints are kept (a job's ``teacher_checkpoint`` names one)."""
        return self.artifact_root / "checkpoints"

    @property
    def datasets_dir(self) -> Path:
        """Where uploaded image folders are kept, one per name (a job's ``root`` names one)."""
        return self.artifact_root / "datasets"

    def job_dir(self, job_id: int) -> Path:
        return self.artifact_root / "jobs" / str(job_id)
