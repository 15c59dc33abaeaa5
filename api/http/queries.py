"""What the routes read and write, on a session: jobs (submit, list, show, artifacts),
architectures, Pareto fronts, sweeps."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from api.http import datasets, schemas
from api.runtime import fronts
from api.runtime.runner import config_for_job, searches_of
from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from api.runtime.sweeps import study_storage
from db.models import Architecture, Artifact, EpochMetric, Job, Stage, Sweep
from distill.config import ConfigError
from search.config import CHECKPOINTS, RunConfig
from search.pareto import pareto_front
from search.sweep import OBJECTIVE, outcome


class NotFound(LookupError):
    pass


class Refused(ValueError):
    pass


def confine(config: RunConfig, settings: Settings) -> RunConfig:
    """A job's server paths, kept to where the service allows: ``teacher_checkpoint`` and
    ``student_checkpoint`` name an uploaded checkpoint (or a file under a data root), ``root`` an
    uploaded dataset by its name (or a directory under a data root; the uploads' folder is one).
    The answer is the same whether or not a refused path exists (no file-existence oracle)."""
    roots = [r.resolve() for r in settings.data_roots]
    shown = ", ".join(str(r) for r in roots) or "none configured"
    shown += "; `reskd serve --data-root DIR` or RESKD_DATA_ROOTS adds one"
    update: dict[str, str] = {}
    for name in CHECKPOINTS:
        given = getattr(config, name)
        if given is None:
            continue
        uploads = settings.checkpoints_dir.resolve()
        path = _inside(uploads / given if "/" not in given else Path(given), [uploads, *roots])
        if path is None:
            raise ConfigError.at(
                (name,),
                "must name a checkpoint uploaded with POST /v1/checkpoints (or a file under "
                f"a data root: {shown})",
            )
        if not _is_file(path):
            raise ConfigError.at((name,), f"no checkpoint {given!r} was uploaded")
        update[name] = str(path)
    if config.root is not None:
        uploads = settings.datasets_dir.resolve()
        path = datasets.upload_root(settings, config.root) or _inside(
            Path(config.root), [*roots, uploads]
        )
        if path is None:
            names = datasets.uploaded_names(settings)
            listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"
            raise ConfigError.at(
                ("root",),
                f"must name a dataset uploaded with POST /v1/datasets (uploaded: {listed}) or "
                f"a directory under a data root ({shown})",
            )
        update["root"] = str(path)
    return config.model_copy(update=update) if update else config


def _inside(path: Path, roots: list[Path]) -> Path | None:
    """``path`` resolved, if it lies under one of ``roots`` (None for a name the system
    refuses, such as one too long)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if any(resolved.is_relative_to(r) for r in roots) else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the system refuses
        return False


def check_upload(path: Path, *, teacher: str | None, dataset: str | None) -> None:
    """Refused (one line) unless ``path`` is a state dict torch loads with ``weights_only=True``
    (or a ``.safetensors`` file) or, with ``teacher`` naming a program kind, such a program; with
    ``teacher`` and ``dataset``, it must fit that architecture and the dataset's classes."""
    from distill.catalog import FOLDER_DATASETS, DatasetError, dataset_info
    from distill.teachers import CheckpointError, check_teacher_file, read_state_dict

    info = None
    if dataset is not None:
        try:
            info = dataset_info(dataset)
        except DatasetError as exc:
            raise Refused(str(exc)) from None
    try:
        if teacher is None:
            read_state_dict(path)
            return
        known = info is not None and info.name not in FOLDER_DATASETS  # folders: at submit
        check_teacher_file(
            path, teacher, num_classes=info.num_classes if known and info else None,
            input_shape=info.input_shape if info else (3, 224, 224),
        )  # fmt: skip
    except CheckpointError as exc:
        raise Refused(f"body: {exc}") from None


def submit(queue: JobQueue, body: schemas.JobCreate, settings: Settings) -> int:
    config = config_for_job(confine(body.config, settings), body.kind)  # ConfigError: 422
    return queue.submit(
        kind=body.kind, config=config.to_dict(), dataset=config.dataset, name=body.name
    )


def list_jobs(
    s: Session, *, state: str | None, kind: str | None, dataset: str | None, limit: int, offset: int
) -> schemas.JobList:
    query = select(Job)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    if dataset:
        query = query.where(Job.dataset == dataset)
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = s.scalars(
        query.order_by(Job.id.desc()).limit(limit).offset(offset).options(selectinload(Job.stages))
    ).all()
    return schemas.JobList(
        jobs=[
            schemas.JobRow(
                **schemas.JobSummary.model_validate(j).model_dump(),
                progress=_progress([schemas.StagePublic.model_validate(st) for st in j.stages]),
                best=_best(j),
            )
            for j in jobs
        ],
        total=int(total),
    )


def _best(job: Job) -> schemas.Best | None:
    """The job's best student on D_v: the report's ``deploy`` (the S_k the export ships), else
    its student row most accurate on D_v (of equal ones the first: fewer networks). Rows without
    a D_v accuracy (results stored before it was recorded) are never chosen on test accuracy:
    such a job has no best."""
    result = job.result or {}
    deploy = result.get("deploy")
    if isinstance(deploy, dict):
        return schemas.Best(
            model=str(deploy["model"]),
            val_accuracy=deploy.get("val_accuracy"),
            accuracy=deploy["accuracy"],
            mflops=deploy["adaptive_mflops"],
            deployed=True,
        )
    rows = [
        r
        for r in result.get("rows", [])
        if r.get("role") not in ("teacher", "baseline") and r.get("val_accuracy") is not None
    ]
    if not rows:
        return None
    row = max(rows, key=lambda r: float(r["val_accuracy"]))  # ties: the first (max keeps it)
    adaptive = row.get("role") == "adaptive"
    return schemas.Best(
        model=row["model"],
        val_accuracy=row["val_accuracy"],
        accuracy=row["accuracy"],
        mflops=row["adaptive_mflops"] if adaptive else row["mflops"],
    )


def _progress(stages: list[schemas.StagePublic]) -> schemas.Progress:
    """The running stage's progress (the last stage's once none runs)."""
    current = next((st for st in reversed(stages) if st.state == "running"), None)
    shown = current or (stages[-1] if stages else None)
    done = sum(st.state == "succeeded" for st in stages)
    if shown is None:
        return schemas.Progress(stages_done=done)
    p = shown.progress
    return schemas.Progress(
        stage=shown.name,
        phase=p.get("phase"),
        epoch=p.get("epoch"),
        epochs=p.get("epochs"),
        batch=p.get("batch"),
        batches=p.get("batches"),
        loss=p.get("loss"),
        accuracy=p.get("accuracy"),
        eta_seconds=p.get("eta_seconds"),
        rate=p.get("rate"),
        unit=p.get("unit"),
        stages_done=done,
    )


def job_exists(s: Session, job_id: int) -> None:
    if s.scalar(select(Job.id).where(Job.id == job_id)) is None:
        raise NotFound(f"job {job_id} not found")


def get_job(s: Session, job_id: int) -> schemas.JobPublic:
    job = s.scalar(
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.stages), selectinload(Job.artifacts))
    )
    if job is None:
        raise NotFound(f"job {job_id} not found")
    stages = [schemas.StagePublic.model_validate(st) for st in job.stages]
    return schemas.JobPublic(
        **schemas.JobSummary.model_validate(job).model_dump(),
        config=job.config,
        progress=_progress(stages),
        best=_best(job),
        stages=stages,
        metrics=list((job.result or {}).get("rows", [])),
        searches=_searches(job),
        teacher=(job.result or {}).get("teacher"),
        warnings=list((job.result or {}).get("warnings") or []),
        artifacts=[
            schemas.ArtifactPublic(
                id=a.id,
                name=a.name,
                kind=a.kind,
                size=a.size,
                url=f"/v1/jobs/{job.id}/artifacts/{a.name}",
            )
            for a in job.artifacts
        ],
    )


def job_metrics(s: Session, job_id: int) -> schemas.JobMetrics:
    """Every stored epoch of the job, per stage (attempts of one stage key merged in order)."""
    job_exists(s, job_id)
    rows = s.execute(
        select(Stage.position, Stage.kind, Stage.key, Stage.name, EpochMetric)
        .join(EpochMetric, EpochMetric.stage_id == Stage.id)
        .where(Stage.job_id == job_id)
        .order_by(Stage.position, EpochMetric.id)
    ).all()
    stages: dict[tuple[str, str, str | None], schemas.StageMetrics] = {}
    for position, kind, key, name, m in rows:
        stage = stages.setdefault(
            (kind, key, m.phase),
            schemas.StageMetrics(
                position=position, kind=kind, key=key, name=name, phase=m.phase, epochs=[]
            ),
        )
        epoch = schemas.EpochPublic.model_validate(m)
        stage.epochs = [e for e in stage.epochs if e.epoch != epoch.epoch] + [epoch]
    return schemas.JobMetrics(job_id=job_id, stages=list(stages.values()))


def _searches(job: Job) -> list[schemas.SearchPublic]:
    names = {a.name for a in job.artifacts}
    out = []
    for f in searches_of(job.result or {}):
        cells = f"{f.get('network')}-cells.png"
        out.append(
            schemas.SearchPublic(
                network=f.get("network", "?"),
                strategy=f.get("strategy"),
                genotype=f["genotype"],
                channels=f["channels"],
                layers=f.get("layers"),
                mflops=f["mflops"],
                budget_mflops=f.get("budget_mflops"),
                repair=f.get("repair"),
                cells=f"/v1/jobs/{job.id}/artifacts/{cells}" if cells in names else None,
            )
        )
    return out


def artifact_path(s: Session, *, job_id: int, name: str, root: Path) -> Path:
    """The file of a job's artifact; nothing outside the artifact root is ever reachable."""
    if ".." in Path(name).parts or name.startswith(("/", "\\")):
        raise Refused("name: an artifact name, not a path outside the artifact root")
    if s.get(Job, job_id) is None:
        raise NotFound(f"job {job_id} not found")
    artifact = s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    base = root.resolve()
    path = (base / artifact.path).resolve()
    if not path.is_relative_to(base):
        raise Refused("name: the artifact lies outside the artifact root")
    if not path.is_file():
        raise NotFound(f"artifact {name!r} of job {job_id} is no longer on disk")
    return path


def _filtered(dataset: str | None, teacher: str | None, include_teacher: bool) -> Any:
    query = select(Architecture)
    if dataset:
        query = query.where(Architecture.dataset == dataset)
    if teacher:
        query = query.where(Architecture.teacher == teacher)
    if not include_teacher:
        query = query.where(Architecture.stage != "T")
    return query


def list_architectures(
    s: Session, *, dataset: str | None, teacher: str | None, limit: int, offset: int
) -> schemas.ArchitectureList:
    query = _filtered(dataset, teacher, include_teacher=True)
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = s.scalars(query.order_by(Architecture.id).limit(limit).offset(offset)).all()
    return schemas.ArchitectureList(
        architectures=[schemas.ArchitecturePublic.model_validate(r) for r in rows],
        total=int(total),
    )


def architecture_points(
    s: Session, *, dataset: str | None, teacher: str | None, cost: schemas.Cost, limit: int
) -> schemas.ArchitecturePoints:
    column = getattr(Architecture, cost)
    query = _filtered(dataset, teacher, include_teacher=False).with_only_columns(
        Architecture.id,
        Architecture.job_id,
        Architecture.stage,
        Architecture.arch,
        Architecture.val_accuracy,
        Architecture.accuracy,
        column,
    )
    rows = s.execute(query.order_by(Architecture.id).limit(limit)).all()
    ids, jobs, stages, archs, vals, accs, costs = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [], [], [])
    )
    return schemas.ArchitecturePoints(
        total=len(rows),
        id=ids,
        job_id=jobs,
        stage=stages,
        arch=archs,
        val_accuracy=vals,
        accuracy=accs,
        cost=[float(c) for c in costs],
    )


def architecture_groups(s: Session) -> schemas.ArchitectureGroups:
    """Every (dataset, teacher identity) with stored architectures, newest first (by its newest
    row with a D_v accuracy, then its newest row), and the default a view shows: the group of
    the latest job that stored architectures with a D_v accuracy (a person who just ran a job
    sees it), else the newest group. Accuracies of different groups are never mixed."""
    ranked_id = case((Architecture.val_accuracy.is_not(None), Architecture.id))
    rows = sorted(
        s.execute(
            select(
                Architecture.dataset,
                Architecture.teacher,
                func.count(),
                func.count(Architecture.val_accuracy),
                func.max(Architecture.job_id),
                func.max(ranked_id),
                func.max(Architecture.id),
            ).group_by(Architecture.dataset, Architecture.teacher)
        ).all(),
        key=lambda r: (r[5] is not None, r[5] or 0, r[6]),
        reverse=True,
    )
    groups = [
        schemas.ArchitectureGroup(
            dataset=d, teacher=t, architectures=int(n), ranked=int(ranked), latest_job_id=job
        )
        for d, t, n, ranked, job, _, _ in rows
    ]
    return schemas.ArchitectureGroups(groups=groups, default=groups[0] if groups else None)


def pareto(
    conn: Any,
    *,
    dataset: str | None,
    teacher: str | None,
    cost: schemas.Cost,
    include_teacher: bool,
) -> schemas.ParetoPublic:
    """The front of D_v accuracy against ``cost`` (test accuracy carried beside): reads the
    stored fronts of the matching (dataset, teacher identity) groups and their counts
    (``api.runtime.fronts``), not every row: its cost does not grow with the archive."""
    rows, considered = fronts.front_rows(
        conn, dataset=dataset, teacher=teacher, cost=cost, include_teacher=include_teacher
    )
    return schemas.ParetoPublic(
        dataset=dataset,
        teacher=teacher,
        cost=cost,
        considered=considered,
        front=[schemas.ArchitecturePublic.model_validate(r._mapping) for r in rows],
    )


# dataset, teacher, cost, include_teacher
ParetoKey = tuple[str | None, str | None, schemas.Cost, bool]


class ParetoResponses:
    """The latest Pareto responses (their JSON bytes), per query, each under the fronts' revision
    it was computed at (``api.runtime.fronts.revision``). A query repeated while no front changed
    costs one read of that revision instead of the fronts' rows and their serialisation; any
    stored result raises the revision, so nothing older is served (several API processes each
    keep their own, checked against the same database). At most ``entries`` queries are kept
    (the least recently used goes); 0 keeps none."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._kept: OrderedDict[ParetoKey, tuple[int, bytes]] = OrderedDict()
        # raw query strings the route has parsed and validated, and the query each one means
        self._queries: OrderedDict[bytes, ParetoKey] = OrderedDict()
        self._lock = threading.Lock()  # the event loop's thread only today; cheap to keep safe

    def validated(self, query_string: bytes, key: ParetoKey) -> None:
        """The route parsed and validated ``query_string`` as ``key`` and answered it: the same
        bytes are then answered before the route (``api.http.kept.KeptPareto``), without its
        parsing again. Up to 4 spellings a kept query on average are remembered (``4 * entries``
        in all; the least recently validated go first)."""
        if not self.entries:
            return
        with self._lock:
            self._queries[query_string] = key
            self._queries.move_to_end(query_string)
            while len(self._queries) > 4 * self.entries:
                self._queries.popitem(last=False)

    def key_of(self, query_string: bytes) -> ParetoKey | None:
        """The query a raw query string means, if the route validated those bytes before."""
        with self._lock:
            return self._queries.get(query_string)

    def read(self, conn: Any, key: ParetoKey, known: str | None) -> tuple[str, bytes | None]:
        """The response's ETag and body for ``key``; the body is None when ``known`` (a client's
        If-None-Match) names the current one (a 304)."""
        revision = fronts.revision(conn)  # first: the fronts read below are at least this new
        tag = etag(revision)
        if known is not None:  # the weak comparison (RFC 9110): W/ aside, the same tag
            given = {t.strip().removeprefix("W/") for t in known.split(",")}
            if "*" in given or tag.removeprefix("W/") in given:
                return tag, None
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == revision:
                self._kept.move_to_end(key)
                return tag, kept[1]
        dataset, teacher, cost, include_teacher = key
        body = (
            pareto(
                conn, dataset=dataset, teacher=teacher, cost=cost, include_teacher=include_teacher
            )
            .model_dump_json()
            .encode()
        )
        if self.entries:
            with self._lock:
                self._kept[key] = (revision, body)
                self._kept.move_to_end(key)
                while len(self._kept) > self.entries:
                    self._kept.popitem(last=False)
        return tag, body


def pareto_response(tag: str, body: bytes | None) -> Response:
    """``GET /v1/pareto``'s answer to what ``ParetoResponses.read`` returned (None: a 304)."""
    headers = {"ETag": tag, "Cache-Control": "no-cache"}  # browsers revalidate, then reuse
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def etag(revision: int) -> str:
    """A weak validator (the same fronts, the same JSON's meaning): the service's version and
    the fronts' revision, so an upgraded service never revalidates an older body."""
    return f'W/"{_version()}-{revision}"'


@cache
def _version() -> str:
    from importlib.metadata import version

    return version("reskd")


def health(s: Session, url: str) -> schemas.Health:
    counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    return schemas.Health(
        status="ok",
        database=url.split(":", 1)[0],
        queued=int(counts.get("queued", 0)),
        running=int(counts.get("running", 0)),
        version=_version(),
    )


# -- sweeps -------------------------------------------------------------------------------------


def _sweep_row(s: Session, sweep_id: int) -> Sweep:
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def sweep_summary(s: Session, sweep: Sweep) -> schemas.SweepSummary:
    counts: dict[str, int] = {}
    for state in s.scalars(select(Job.state).where(Job.sweep_id == sweep.id)):
        counts[state] = counts.get(state, 0) + 1
    return schemas.SweepSummary(
        id=sweep.id,
        name=sweep.name,
        study_name=sweep.study_name,
        state=sweep.state,
        dataset=sweep.dataset,
        trials=sweep.trials,
        sampler=sweep.spec.get("sampler", "nsga2"),
        cost=sweep.spec.get("cost", "mflops"),
        trial_states=counts,
        error=sweep.error,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
    )


def list_sweeps(s: Session, *, limit: int, offset: int) -> list[schemas.SweepSummary]:
    rows = s.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(limit).offset(offset)).all()
    return [sweep_summary(s, r) for r in rows]


def trials(s: Session, db_url: str, sweep_id: int) -> list[schemas.TrialPublic]:
    """The sweep's trials: Optuna's view (params, values, state) joined with their jobs. The
    first objective is D_v accuracy; test accuracy is the trial's user attribute. A trial told
    before sweeps ranked on D_v (neither its study nor it says D_v) was told test accuracy: its
    D_v accuracy is read from its job's result where that has one."""
    sweep = _sweep_row(s, sweep_id)
    jobs = {j.trial: j for j in s.scalars(select(Job).where(Job.sweep_id == sweep_id))}
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=study_storage(db_url))
    except KeyError:
        return []
    study_on_dv = study.user_attrs.get("objective") == OBJECTIVE
    cost = str(sweep.spec.get("cost", "mflops"))
    out = []
    for t in study.get_trials(deepcopy=False):
        job = jobs.get(t.number)
        values = list(t.values) if t.values is not None else None
        val = test = None
        if values and (study_on_dv or "accuracy" in t.user_attrs):
            val, test = values[0], t.user_attrs.get("accuracy")
        elif values:
            test, val = values[0], _val_accuracy(job, cost)
        out.append(
            schemas.TrialPublic(
                number=t.number,
                state=t.state.name.lower(),
                params=dict(t.params),
                val_accuracy=val,
                accuracy=test,
                cost=values[1] if values else None,
                job_id=job.id if job else None,
                job_state=job.state if job else None,
                error=(job.error if job else None) or t.user_attrs.get("error"),
            )
        )
    return out


def _val_accuracy(job: Job | None, cost: str) -> float | None:
    try:
        return outcome((job.result if job else None) or {}, cost).val_accuracy
    except ValueError:
        return None


def get_sweep(
    s: Session, db_url: str, sweep_id: int, dashboard_url: str | None = None
) -> schemas.SweepPublic:
    sweep = _sweep_row(s, sweep_id)
    link = None
    if dashboard_url:  # optuna-dashboard's address of a study is its storage id
        try:
            study_id = study_storage(db_url).get_study_id_from_name(sweep.study_name)
            link = f"{dashboard_url.rstrip('/')}/dashboard/studies/{study_id}"
        except KeyError:
            link = None
    return schemas.SweepPublic(
        **sweep_summary(s, sweep).model_dump(),
        spec=sweep.spec,
        trial_list=trials(s, db_url, sweep_id),
        optuna_dashboard=link,
    )


def sweep_pareto(s: Session, db_url: str, sweep_id: int) -> schemas.SweepPareto:
    """The non-dominated complete trials: D_v accuracy of S_n (higher) against the sweep's cost
    (lower); test accuracy is carried, never ranked on. Trials with equal objectives are all
    kept, as Optuna's ``best_trials`` keeps them; trials without a D_v accuracy are left out."""
    sweep = _sweep_row(s, sweep_id)
    done = [t for t in trials(s, db_url, sweep_id) if t.state == "complete"]
    ranked = [t for t in done if t.val_accuracy is not None and t.cost is not None]
    front = pareto_front(
        ranked, accuracy=lambda t: float(t.val_accuracy or 0), cost=lambda t: float(t.cost or 0)
    )
    kept = {(f.val_accuracy, f.cost) for f in front}
    front = [t for t in ranked if (t.val_accuracy, t.cost) in kept]
    front.sort(key=lambda t: (t.cost or 0, -(t.val_accuracy or 0), t.number))
    return schemas.SweepPareto(
        sweep_id=sweep_id,
        cost=sweep.spec.get("cost", "mflops"),
        considered=len(ranked),
        unranked=len(done) - len(ranked),
        front=front,
    )
