"""The ResKD pipeline (Li et al., Algorithm 1) as a sequence of stored stages: teacher -> S0 by
KD -> res-students R_i (handcrafted, or searched then fine-tuned) on the residual T - S_{i-1} until
Energy(S_i, D_v) > ratio * Energy(T, D_v) -> TH_energy -> the sample-adaptive student.

Every stage is stored under ``<out>/<kind>-<key>/`` where the key hashes the stage's config and its
inputs' keys: a finished stage is loaded instead of trained again, an interrupted one resumes from
its last epoch checkpoint, and a changed config trains only what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill import observe
from distill.assistant import VARIANTS, Variant
from distill.combined import CombinedStudent, LogitSum, evaluate_adaptive
from distill.data import (
    DataBundle,
    DatasetError,
    dataset_info,
    dataset_labels,
    load_dataset,
    num_samples,
    validation_split,
)
from distill.models import GENOTYPE_MODEL, NetSpec, complexity
from distill.report import format_table
from distill.residual import (
    MethodConfig,
    ResidualDistillation,
    _check,
    _stage_seed,
    dataset_energy,
    gi_over_c1,
    l2_to_teacher,
    should_stop,
    zero_output,
)
from distill.stages import StageResult, run_stage, stage_key
from distill.train import (
    PRESETS,
    Supervised,
    TrainConfig,
    accuracy,
    predict_logits,
    preset,
    resolve_device,
)
from search.budget import BudgetError, check_budget
from search.run import SearchResult, residual_objective, run_search, shape_for
from search.spec import SearchSpec
from space.genotypes import Genotype
from space.zoo import Backbone

Baseline = Literal["ensemble", "together", "feature_kd"]
SEARCHED = "searched"  # NetConfig.model of a network found by a search
BASELINES: dict[str, tuple[Baseline, ...]] = {
    "reskd": ("ensemble", "together"),
    "assistant": ("feature_kd",),
}


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetConfig:
    """A handcrafted network of the zoo, one found by a search under a budget (``search``), or
    the network of a given genotype (``genotype``, ``channels``, ``layers``)."""

    model: str
    width: float = 1.0
    num_classes: int | None = None  # if given, must match the dataset
    search: SearchSpec | None = None
    genotype: dict[str, Any] | None = None
    channels: int | None = None
    layers: int | None = None
    auxiliary: bool = False
    drop_path_prob: float = 0.0

    @property
    def searched(self) -> bool:
        return self.search is not None


@dataclass(frozen=True)
class AssistantConfig:
    """The feature-residual assistant method (Gao et al.): ``student`` is split into S and A with
    ``separation`` of its MFLOPs for S; ``at_weight`` > 0 adds attention transfer (their
    "RKD + AT"; 1000 is Zagoruyko & Komodakis's weight)."""

    variant: Variant = "integrated"
    separation: float = 0.9
    at_weight: float = 0.0

    def __post_init__(self) -> None:
        _check(
            "assistant.variant",
            self.variant in VARIANTS,
            f"one of {', '.join(VARIANTS)}",
            self.variant,
        )
        _check("assistant.separation", 0 < self.separation < 1, "in (0, 1)", self.separation)
        _check("assistant.at_weight", self.at_weight >= 0, ">= 0", self.at_weight)


@dataclass(frozen=True)
class RunConfig:
    """A run: ``method: reskd`` (default; S0 and res-students on the logit residual) or
    ``method: assistant`` (the feature-map residual of Gao et al.). Built from a YAML/JSON mapping
    by :meth:`from_dict`, which checks every field (and the models, dataset and class counts)
    before any training."""

    dataset: str
    teacher: NetConfig
    student: NetConfig
    res_students: tuple[NetConfig, ...] = ()
    method: Literal["reskd", "assistant"] = "reskd"
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    root: str | None = None
    augment: bool = False
    val_size: int = 500
    teacher_checkpoint: str | None = None
    kd: MethodConfig = field(default_factory=MethodConfig)
    # S0's KD settings when they differ from the res-students' (a sweep over the res-students'
    # temperature and weight keeps S0, so every trial reuses it); default: ``kd``.
    student_kd: MethodConfig | None = None
    ratio: float = 0.9
    max_stages: int | None = None  # default: one stage per entry of res_students
    preset: str = "cpu-small"
    train: Mapping[str, Any] = field(default_factory=dict)  # overrides of the preset
    teacher_train: Mapping[str, Any] = field(default_factory=dict)
    baselines: tuple[Baseline, ...] = ()
    seed: int = 0
    device: str = "auto"

    @property
    def stages(self) -> int:
        return self.max_stages if self.max_stages is not None else len(self.res_students)

    def kd_for(self, i: int) -> MethodConfig:
        """The KD settings of stage ``i`` (0 = S0)."""
        return self.student_kd if i == 0 and self.student_kd is not None else self.kd

    def res_student(self, i: int) -> NetConfig:
        """The res-student of stage ``i`` (1-based); the last entry repeats."""
        return self.res_students[min(i, len(self.res_students)) - 1]

    def train_config(self, *, teacher: bool = False) -> TrainConfig:
        overrides = {**self.train, **(self.teacher_train if teacher else {})}
        try:
            return preset(self.preset, seed=self.seed, device=self.device, **overrides)
        except TypeError as exc:
            allowed = ", ".join(f.name for f in fields(TrainConfig))
            raise ValueError(f"train: {exc}; allowed keys: {allowed}") from exc

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field; allowed: {', '.join(sorted(known))}")
        method = raw.get("method", "reskd")
        _check("method", method in ("reskd", "assistant"), "one of reskd, assistant", method)
        required = ["dataset", "teacher", "student"]
        required += ["res_students"] if method == "reskd" else []
        for name in required:
            if name not in raw:
                raise ValueError(f"{name}: required")
        data = dict(raw)
        data["teacher"] = _net("teacher", raw["teacher"])
        data["student"] = _net("student", raw["student"])
        res = raw.get("res_students", ())
        if isinstance(res, str | Mapping):
            res = [res]
        kd_only = raw.get("max_stages") == 0  # teacher and S0 only
        if not isinstance(res, list | tuple) or (method == "reskd" and not res and not kd_only):
            raise ValueError("res_students: a non-empty list of res-student models")
        data["res_students"] = tuple(_net(f"res_students[{i}]", r) for i, r in enumerate(res))
        data["kd"] = _section("kd", raw.get("kd", {}), MethodConfig)
        if raw.get("student_kd") is not None:
            data["student_kd"] = _section("student_kd", raw["student_kd"], MethodConfig)
        data["assistant"] = _section("assistant", raw.get("assistant", {}), AssistantConfig)
        data["baselines"] = tuple(raw.get("baselines", ()))
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Every check that needs no data: fails before any training."""
        info = dataset_info(self.dataset)  # names the dataset field and what is allowed
        for name, net in self.nets():
            if net.searched:
                if name in ("teacher",) or self.method != "reskd":
                    raise ValueError(f"{name}.search: only S0 and res-students can be searched")
                assert net.search is not None
                try:  # a budget below the space's smallest network fails now, not mid-run
                    search = net.search
                    check_budget(shape_for(search, info), search.budget_mflops, search.min_channels)
                except BudgetError as exc:
                    raise ValueError(f"{name}.search.{exc}") from exc
                continue
            if net.genotype is not None:
                if self.method != "reskd":
                    raise ValueError(f"{name}.genotype: genotype networks need method reskd")
                continue
            spec_error = None
            try:
                NetSpec(net.model, net.width)
            except ValueError as exc:
                spec_error = str(exc)
            if spec_error:
                raise ValueError(f"{name}.{spec_error}")
            _check(f"{name}.width", net.width > 0, "> 0", net.width)
            if net.num_classes is not None and self.dataset != "imagefolder":
                _check(
                    f"{name}.num_classes",
                    net.num_classes == info.num_classes,
                    f"{info.num_classes} (the classes of {self.dataset})",
                    net.num_classes,
                )
        _check("ratio", 0 < self.ratio <= 1, "in (0, 1]", self.ratio)
        if self.method == "reskd":
            _check("max_stages", self.stages >= 0, ">= 0 (0: teacher and S0 only)", self.max_stages)
        _check("val_size", self.val_size >= 1, ">= 1", self.val_size)
        _check("preset", self.preset in PRESETS, f"one of {', '.join(PRESETS)}", self.preset)
        allowed = BASELINES[self.method]
        for b in self.baselines:
            _check("baselines", b in allowed, f"a list of {', '.join(allowed)}", b)
        if self.teacher_checkpoint is not None and not Path(self.teacher_checkpoint).is_file():
            raise ValueError(f"teacher_checkpoint: no file at {self.teacher_checkpoint}")
        self.train_config()
        self.train_config(teacher=True)
        resolve_device(self.device)

    def nets(self) -> list[tuple[str, NetConfig]]:
        return [("teacher", self.teacher), ("student", self.student)] + [
            (f"res_students[{i}]", r) for i, r in enumerate(self.res_students)
        ]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))


def _section(name: str, raw: Any, cls: type[Any]) -> Any:
    """A nested mapping of the config as ``cls``, naming unknown keys."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: a mapping of settings")
    allowed = {f.name for f in fields(cls)}
    if set(raw) - allowed:
        bad = sorted(set(raw) - allowed)[0]
        raise ValueError(f"{name}.{bad}: unknown field; allowed: {', '.join(sorted(allowed))}")
    return cls(**raw)


def _net(name: str, raw: Any) -> NetConfig:
    if isinstance(raw, str):
        return NetConfig(raw)
    if isinstance(raw, Mapping) and raw.get("search") is not None:
        # A config written back by to_dict() also holds the fields' defaults: accept those.
        defaults = {f.name: f.default for f in fields(NetConfig)} | {"model": SEARCHED}
        extra = sorted(
            k for k, v in raw.items() if k != "search" and (k not in defaults or defaults[k] != v)
        )
        if extra:
            raise ValueError(f"{name}.{extra[0]}: a searched network takes only 'search'")
        return NetConfig(
            SEARCHED, search=SearchSpec.from_dict(raw["search"], name=f"{name}.search")
        )
    if isinstance(raw, Mapping) and raw.get("genotype") is not None:
        return _genotype_net(name, {k: v for k, v in raw.items() if k != "search" or v})
    if not isinstance(raw, Mapping) or "model" not in raw:
        raise ValueError(
            f"{name}: a model name, a mapping with 'model' (and 'width'), {{search: {{...}}}} "
            "or {genotype: {...}, channels: C, layers: L}"
        )
    raw = {k: v for k, v in raw.items() if not (k in ("search", "genotype") and v is None)}
    allowed = {f.name for f in fields(NetConfig)} - {"search"}
    if set(raw) - allowed:
        bad = sorted(set(raw) - allowed)[0]
        raise ValueError(f"{name}.{bad}: unknown field; allowed: {', '.join(sorted(allowed))}")
    return NetConfig(**raw)


def _genotype_net(name: str, raw: Mapping[str, Any]) -> NetConfig:
    allowed = {
        "model",
        "genotype",
        "channels",
        "layers",
        "auxiliary",
        "drop_path_prob",
        "width",
        "num_classes",
    }
    if set(raw) - allowed:
        bad = sorted(set(raw) - allowed)[0]
        raise ValueError(f"{name}.{bad}: unknown field; allowed: {', '.join(sorted(allowed))}")
    try:
        genotype = Genotype.from_dict(raw["genotype"])
    except ValueError as exc:
        raise ValueError(f"{name}.{exc}") from exc
    for field_name, least in (("channels", 2), ("layers", 3)):
        value = raw.get(field_name)
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name}.{field_name}: must be an integer >= {least}, got {value!r}")
    if raw["channels"] % 2:
        raise ValueError(f"{name}.channels: must be even, got {raw['channels']}")
    return NetConfig(
        GENOTYPE_MODEL,
        genotype=genotype.to_dict(),
        channels=raw["channels"],
        layers=raw["layers"],
        auxiliary=bool(raw.get("auxiliary", False)),
        drop_path_prob=float(raw.get("drop_path_prob", 0.0)),
        num_classes=raw.get("num_classes"),
    )


def load_config(path: Path) -> RunConfig:
    """A run config from a YAML or JSON file."""
    import yaml

    if not path.is_file():
        raise ValueError(f"config: no file at {path}")
    raw = yaml.safe_load(path.read_text())  # JSON is YAML
    if not isinstance(raw, Mapping):
        raise ValueError(f"config: {path} must hold a mapping of fields")
    return RunConfig.from_dict(raw)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    rows: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    threshold: float | None  # TH_energy (ResKD)
    combined: nn.Module  # the deployable student: CombinedStudent or AssistedStudent
    logits_cached: bool
    validation: dict[str, Any]
    searches: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        columns = [
            "model",
            "arch",
            "accuracy",
            "mparams",
            "mflops",
            "adaptive_mflops",
            "pct_of_T",
            "energy",
            "l2_to_T",
            "gi_over_c1",
        ]
        return format_table(self.rows, columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "stages": self.stages,
            "threshold": self.threshold,
            "logits": "cached once per stage"
            if self.logits_cached
            else "computed per batch (random augmentation)",
            "validation": self.validation,
            "searches": self.searches,
        }


def search(
    config: RunConfig,
    *,
    out_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stages_dir: Path | None = None,
) -> dict[str, Any]:
    """Only the first searched network of the pipeline (``reskd search``): the teacher and the
    stages before it run (or are reused) so that its residual target exists; returns the search's
    record (genotype, channels, counted MFLOPs, plot, directory)."""
    if not any(net.searched for net in (config.student, *config.res_students)):
        raise ValueError(
            "res_students: the config searches no network; give a res-student (or the student) "
            "as {search: {budget_mflops: ..., epochs: ..., channels: ..., layers: ...}}"
        )
    found = _run(
        config,
        out_dir=out_dir,
        progress=progress,
        log=log,
        stop_after_search=True,
        stages_dir=stages_dir,
    )
    assert isinstance(found, list) and found
    return found[-1]


def run(
    config: RunConfig,
    *,
    out_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stages_dir: Path | None = None,
) -> RunResult:
    """Algorithm 1 (with the Table II baselines when asked), then the report. Stages are stored
    under ``stages_dir`` (default ``out_dir``): a service shares one store between its jobs."""
    result = _run(config, out_dir=out_dir, progress=progress, log=log, stages_dir=stages_dir)
    assert isinstance(result, RunResult)
    return result


def _search_stage(
    spec: SearchSpec,
    *,
    out_dir: Path,
    payload: dict[str, Any],
    factory: Any,
    data: DataBundle,
    device: str,
    desc: str,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], StageResult]:
    """The search of one network, stored under ``search-<key>/`` like every stage (an interrupted
    search resumes from its last epoch; a finished one is reused)."""
    full = {"spec": spec.to_dict(), **payload}
    key = stage_key("search", full)
    directory = out_dir / f"search-{key}"
    done = directory / "search.json"
    observer = observe.current()
    with observe.exclusive("search", key):
        if done.is_file():
            stored = json.loads(done.read_text())
            log(f"stage search [{key}]: stored result reused")
            trained, seconds = False, float(stored["seconds"])
            if observer is not None:
                observer.stage_reused("search", key, f"{desc} search")
        else:
            if observer is not None:
                observer.stage_started("search", key, f"{desc} search ({spec.strategy})")
            stored, seconds = _search(
                spec, full, directory, factory, data, device, desc, progress, log
            )
            trained = True
            if observer is not None:
                observer.stage_finished("search", key, seconds)
    found = {
        "genotype": stored["genotype"],
        "channels": stored["channels"],
        "layers": stored["layers"],
        "mflops": stored["mflops"],
        "budget_mflops": spec.budget_mflops,
        "strategy": spec.strategy,
        "plot": str(directory / "alphas.png"),
        "directory": str(directory),
    }
    return found, StageResult("search", key, trained, seconds, directory)


def _search(
    spec: SearchSpec,
    full: dict[str, Any],
    directory: Path,
    factory: Any,
    data: DataBundle,
    device: str,
    desc: str,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], float]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(full, indent=2, default=str))
    result: SearchResult = run_search(
        spec,
        info=data.info,
        train_data=data.train,
        objective_factory=factory,
        out_dir=directory,
        device=device,
        progress=progress,
        log=lambda line: log(f"{desc} {line}"),
    )
    return result.to_dict(), result.seconds


def _run(
    config: RunConfig,
    *,
    out_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_search: bool = False,
    stages_dir: Path | None = None,
) -> RunResult | list[dict[str, Any]]:
    config.validate()
    stages_dir = stages_dir or out_dir
    data = load_dataset(config.dataset, root=config.root, augment=config.augment)
    info = data.info
    if num_samples(data.train) == 0 or num_samples(data.test) == 0:
        raise DatasetError(f"dataset: {config.dataset} has an empty training or test set")
    for name, declared in config.nets():
        if declared.num_classes is not None and declared.num_classes != info.num_classes:
            raise ValueError(
                f"{name}.num_classes: must be {info.num_classes} (the classes found in "
                f"{config.dataset}), got {declared.num_classes}"
            )
    if config.val_size > num_samples(data.train_eval):
        raise ValueError(
            f"val_size: must be <= {num_samples(data.train_eval)} (the training set), "
            f"got {config.val_size}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    device = resolve_device(config.device)
    split = validation_split(num_samples(data.train_eval), seed=config.seed, size=config.val_size)
    (out_dir / "validation_split.json").write_text(json.dumps(split.to_dict()))
    d_v = split.subset(data.train_eval)
    cached = not data.augmented
    train_cfg = config.train_config()
    stages: list[dict[str, Any]] = []
    data_key = {"dataset": config.dataset, "root": config.root, "augment": config.augment}

    def spec(net: NetConfig) -> NetSpec:
        if net.genotype is not None:
            assert net.channels is not None and net.layers is not None
            return NetSpec.of_genotype(
                Genotype.from_dict(net.genotype),
                info,
                channels=net.channels,
                layers=net.layers,
                auxiliary=net.auxiliary,
                drop_path_prob=net.drop_path_prob,
            )
        return NetSpec.for_dataset(net.model, info, width=net.width)

    def logits_on(model: nn.Module, dataset: Dataset[tuple[Tensor, int]]) -> Tensor:
        return predict_logits(model.to(device), dataset, device=device)[0]

    def record(result: StageResult, **extra: Any) -> None:
        stages.append(result.summary() | extra)

    # -- teacher ------------------------------------------------------------------------------
    t_spec = spec(config.teacher)
    torch.manual_seed(_stage_seed(config.seed, "teacher"))
    teacher = t_spec.build()
    t_cfg = config.train_config(teacher=True)
    if config.teacher_checkpoint is not None:
        state = torch.load(config.teacher_checkpoint, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state.get("state_dict", state))
        t_key = stage_key("teacher", {"checkpoint": config.teacher_checkpoint})
        log(f"teacher {t_spec.label}: loaded from {config.teacher_checkpoint}")
    else:
        t_payload = {"net": t_spec.to_dict(), "train": t_cfg.to_dict(), **data_key}
        result = run_stage(
            stages_dir,
            "teacher",
            t_payload,
            {"model": teacher},
            task=Supervised(teacher),
            train_data=data.train,
            config=t_cfg,
            desc=f"teacher {t_spec.label}",
            progress=progress,
            log=log,
        )
        t_key = result.key
        record(result)
    teacher.eval()
    t_val, t_test = logits_on(teacher, d_v), logits_on(teacher, data.test)
    if config.method == "assistant":
        return _run_assistant(
            config,
            data,
            teacher,
            t_spec,
            t_key,
            t_test,
            out_dir,
            stages_dir,
            stages,
            split.to_dict(),
            device,
            progress,
            log,
        )

    t_train = logits_on(teacher, data.train_eval) if cached else None
    e_teacher = dataset_energy(t_val)
    log(
        f"teacher: Energy(T, D_v) = {e_teacher:.4f}; stop when Energy(S_i, D_v) > "
        f"{config.ratio} x {e_teacher:.4f} = {config.ratio * e_teacher:.4f}"
    )

    # -- S0 and the res-students ---------------------------------------------------------------
    nets: list[nn.Module] = []
    specs: list[NetSpec] = []
    s_val = s_train = None
    previous_key = t_key
    test_logits: list[Tensor] = []
    searches: list[dict[str, Any]] = []
    for i in range(config.stages + 1):  # i = 0 is S0
        net_cfg = config.student if i == 0 else config.res_student(i)
        method = config.kd_for(i)
        objective = method.objective()
        desc = "S0" if i == 0 else f"R{i}"
        base = LogitSum(list(nets)) if nets else None
        cache = (t_train, s_train) if cached and t_train is not None else None
        search_key = None
        if net_cfg.search is not None:
            found, search_stage = _search_stage(
                net_cfg.search,
                out_dir=stages_dir,
                payload={
                    "kd": method.for_stage(i),
                    "input": previous_key,
                    "stage": i,
                    **data_key,
                },
                factory=residual_objective(
                    method=method, objective=objective, teacher=teacher, base=base, cache=cache
                ),
                data=data,
                device=config.device,
                desc=desc,
                progress=progress,
                log=log,
            )
            search_key = search_stage.key
            record(search_stage, network=desc)
            searches.append({"network": desc, **found})
            if stop_after_search:
                return searches
            net_spec = NetSpec.of_genotype(
                Genotype.from_dict(found["genotype"]),
                info,
                channels=found["channels"],
                layers=net_cfg.search.layers,
                auxiliary=net_cfg.search.auxiliary,
                drop_path_prob=net_cfg.search.drop_path_prob,
            )
        else:
            net_spec = spec(net_cfg)
        torch.manual_seed(_stage_seed(config.seed, f"stage{i}"))
        net = net_spec.build()
        peer = net_spec.build() if method.method == "dml" else None
        if i > 0 and method.zero_init_residual:
            for r in (net, peer):
                if r is not None:
                    zero_output(r)
        task = ResidualDistillation(
            net,
            objective=objective,
            method=method,
            teacher=None if cache else teacher,
            base=None if cache else base,
            cache=cache,
            peer=peer,
        )
        kind = "finetune" if search_key else "student" if i == 0 else "residual"
        # Genotype networks train as DARTS trains them: gradients clipped at norm 5 (without,
        # a pooling-heavy cell diverged to NaN at lr 0.05 in one benchmark seed).
        stage_cfg = replace(train_cfg, grad_clip=5.0) if net_spec.genotype else train_cfg
        payload = {
            "net": net_spec.to_dict(),
            "kd": method.for_stage(i),
            "train": stage_cfg.to_dict(),
            "input": previous_key,
            "stage": i,
            **data_key,
        } | ({"search": search_key} if search_key else {})
        result = run_stage(
            stages_dir,
            kind,
            payload,
            {"model": net},
            task=task,
            train_data=data.train,
            config=stage_cfg,
            desc=f"{desc} {net_spec.label}",
            progress=progress,
            log=log,
        )
        previous_key = result.key
        net.eval()
        nets.append(net)
        specs.append(net_spec)
        r_val, r_test = logits_on(net, d_v), logits_on(net, data.test)
        s_val = r_val if s_val is None else s_val + r_val
        test_logits.append(r_test)
        if cached:
            r_train = logits_on(net, data.train_eval)
            s_train = r_train if s_train is None else s_train + r_train
        e = dataset_energy(s_val)
        stop = i > 0 and should_stop(e, e_teacher, config.ratio)
        record(result, network=desc, arch=net_spec.label, energy_dv=round(e, 5))
        log(
            f"S{i}: Energy(S{i}, D_v) = {e:.4f} ({100 * e / e_teacher:.1f}% of T)"
            + (" -> stop" if stop else "")
        )
        if stop:
            break
    assert s_val is not None
    n = len(nets) - 1
    threshold = dataset_energy(s_val)  # eq. 10: TH_energy = Energy(S_n, D_v)

    # -- the combined student ------------------------------------------------------------------
    costs = [complexity(net, info) for net in nets]
    combined = CombinedStudent(
        nets[0], nets[1:], threshold=threshold, specs=specs, mflops=[c.mflops for c in costs]
    )
    combined.save(out_dir / "combined_student.pt")
    adaptive = evaluate_adaptive(combined, data.test, device=device)

    # -- report -------------------------------------------------------------------------------
    labels = torch.tensor(dataset_labels(data.test))
    t_cost = complexity(teacher, info)
    rows = [
        _row("T", t_spec.label, t_test, t_test, labels, t_cost.params, t_cost.mflops, t_cost.mflops)
    ]
    running = torch.zeros_like(t_test)
    params = 0
    mflops = 0.0
    for i, (r_test_i, cost) in enumerate(zip(test_logits, costs, strict=True)):
        running = running + r_test_i
        params += cost.params
        mflops += cost.mflops
        arch = "-".join(s.label for s in specs[: i + 1])
        rows.append(_row(f"S{i}", arch, running, t_test, labels, params, mflops, t_cost.mflops))
    rows.append(
        _row(
            f"S{n} adaptive",
            rows[-1]["arch"],
            adaptive.logits,
            t_test,
            labels,
            params,
            mflops,
            t_cost.mflops,
            adaptive_mflops=adaptive.expected_mflops,
        )
    )
    rows[-1]["stopped_after"] = adaptive.stage_histogram

    for baseline in config.baselines:
        rows.append(
            _baseline(
                baseline,
                config,
                data,
                teacher,
                specs[:2],
                t_key,
                t_test,
                labels,
                t_cost.mflops,
                stages_dir,
                progress,
                log,
                device,
                stages,
                t_train,
            )
        )

    result_obj = RunResult(
        rows,
        stages,
        threshold,
        combined,
        cached,
        split.to_dict() | {"indices": f"{split.size} indices in validation_split.json"},
        searches,
    )
    (out_dir / "report.json").write_text(json.dumps(result_obj.to_dict(), indent=2))
    (out_dir / "report.txt").write_text(result_obj.table() + "\n")
    log("\n" + result_obj.table())
    log(
        f"\nTH_energy = {threshold:.4f}; teacher and earlier students' logits "
        + ("cached once per stage" if cached else "computed per batch (random augmentation)")
    )
    return result_obj


def _row(
    name: str,
    arch: str,
    logits: Tensor,
    teacher: Tensor,
    labels: Tensor,
    params: int,
    mflops: float,
    teacher_mflops: float,
    adaptive_mflops: float | None = None,
) -> dict[str, Any]:
    effective = mflops if adaptive_mflops is None else adaptive_mflops
    return {
        "model": name,
        "arch": arch,
        "accuracy": accuracy(logits, labels),
        "mparams": params / 1e6,
        "mflops": mflops,
        "adaptive_mflops": effective,
        "pct_of_T": 100 * effective / teacher_mflops,
        "energy": dataset_energy(logits),
        "l2_to_T": l2_to_teacher(logits, teacher),
        "gi_over_c1": gi_over_c1(logits, teacher),
    }


def _baseline(
    kind: Baseline,
    config: RunConfig,
    data: DataBundle,
    teacher: nn.Module,
    specs: list[NetSpec],
    t_key: str,
    t_test: Tensor,
    labels: Tensor,
    t_mflops: float,
    stages_dir: Path,
    progress: bool,
    log: Callable[[str], None],
    device: torch.device,
    stages: list[dict[str, Any]],
    t_train: Tensor | None,
) -> dict[str, Any]:
    """Table II's baselines with the architectures of S0 and R1, both distilled from T with the
    run's method: ``ensemble`` trains them independently and sums their logits, ``together``
    trains their sum as one network."""
    train_cfg = config.train_config()
    cache = (t_train, None) if t_train is not None else None
    torch.manual_seed(_stage_seed(config.seed, f"baseline-{kind}"))
    nets = [s.build() for s in specs]
    arch = "-".join(s.label for s in specs)
    payload_base = {
        "specs": [s.to_dict() for s in specs],
        "kd": asdict(config.kd),
        "train": train_cfg.to_dict(),
        "input": t_key,
        "dataset": config.dataset,
        "augment": config.augment,
        "root": config.root,
    }

    def task(model: nn.Module) -> ResidualDistillation:
        return ResidualDistillation(
            model,
            objective=config.kd.objective(),
            method=replace(config.kd, method="kd"),
            teacher=None if cache else teacher,
            cache=cache,
        )

    if kind == "ensemble":
        for j, net in enumerate(nets):
            result = run_stage(
                stages_dir,
                "ensemble",
                {**payload_base, "member": j},
                {"model": net},
                task=task(net),
                train_data=data.train,
                config=train_cfg,
                desc=f"ensemble member {j}",
                progress=progress,
                log=log,
            )
            stages.append(result.summary())
    whole = LogitSum(nets)
    if kind == "together":
        result = run_stage(
            stages_dir,
            "together",
            payload_base,
            {"model": whole},
            task=task(whole),
            train_data=data.train,
            config=train_cfg,
            desc="trained together",
            progress=progress,
            log=log,
        )
        stages.append(result.summary())
    logits = predict_logits(whole.to(device).eval(), data.test, device=device)[0]
    info = data.info
    costs = [complexity(net, info) for net in nets]
    return _row(
        kind,
        arch,
        logits,
        t_test,
        labels,
        sum(c.params for c in costs),
        sum(c.mflops for c in costs),
        t_mflops,
    )


def _run_assistant(
    config: RunConfig,
    data: DataBundle,
    teacher: nn.Module,
    t_spec: NetSpec,
    t_key: str,
    t_test: Tensor,
    out_dir: Path,
    stages_dir: Path,
    stages: list[dict[str, Any]],
    validation: dict[str, Any],
    device: torch.device,
    progress: bool,
    log: Callable[[str], None],
) -> RunResult:
    """Gao et al.'s method: separate ``student`` into S and A, train S on the teacher's feature
    maps, then A on the residual (the variant's phases), and report S, S + A and the baseline."""
    from distill.assistant import (
        AssistantDistillation,
        AssistedStudent,
        plan,
        save_assisted,
        separate,
        teacher_adapters,
    )

    assert isinstance(teacher, Backbone)
    info = data.info
    cfg = config.assistant
    train_cfg = config.train_config()
    labels = torch.tensor(dataset_labels(data.test))
    t_cost = complexity(teacher, info)
    original = NetSpec.for_dataset(config.student.model, info, width=config.student.width)
    separation = separate(original, ratio=cfg.separation, variant=cfg.variant)
    log(
        f"separation {cfg.separation:g}: S {separation.student.label} "
        f"{separation.student_mflops:.3f} + A {separation.assistant.label} "
        f"{separation.assistant_mflops:.3f} = {separation.total_mflops:.3f} MFLOPs "
        f"(original {original.label} {separation.original_mflops:.3f}, "
        f"{100 * separation.relative_error:+.2f}%)"
    )
    rows = [
        _row("T", t_spec.label, t_test, t_test, labels, t_cost.params, t_cost.mflops, t_cost.mflops)
    ]

    def train_phases(name: str, model: AssistedStudent, after_student: Callable[[], None]) -> None:
        adapters = teacher_adapters(teacher, model.student)
        previous = t_key
        for phase in plan(model, adapters):
            payload = {
                "net": name,
                "phase": phase.name,
                "levels": phase.levels,
                "variant": model.variant,
                "student": (separation.student if model.assistant else original).to_dict(),
                "assistant": separation.assistant.to_dict() if model.assistant else None,
                "at_weight": cfg.at_weight,
                "train": train_cfg.to_dict(),
                "input": previous,
                "dataset": config.dataset,
                "augment": config.augment,
            }
            task = AssistantDistillation(
                model,
                teacher,
                adapters,
                phase=phase.phase,
                levels=phase.levels,
                parts=phase.parts,
                at_weight=cfg.at_weight,
            )
            result = run_stage(
                stages_dir,
                f"{name}-{phase.name}",
                payload,
                {"model": model, "adapters": adapters},
                task=task,
                train_data=data.train,
                config=train_cfg,
                desc=f"{name} {phase.name}",
                progress=progress,
                log=log,
            )
            previous = result.key
            stages.append(result.summary())
            if phase.name == "student":
                after_student()
        model.eval()

    def add_row(name: str, arch: str, model: nn.Module) -> None:
        cost = complexity(model, info)
        logits = predict_logits(model.to(device).eval(), data.test, device=device)[0]
        rows.append(
            _row(name, arch, logits, t_test, labels, cost.params, cost.mflops, t_cost.mflops)
        )

    torch.manual_seed(_stage_seed(config.seed, "assistant"))
    assisted = AssistedStudent(
        separation.student.build_backbone(),
        separation.assistant.build_backbone(),
        variant=cfg.variant,
    )
    s_alone = partial(add_row, "S (separated)", separation.student.label, assisted.student)
    train_phases("assistant", assisted, s_alone if cfg.variant != "progressive" else lambda: None)
    add_row(
        f"S + A ({cfg.variant})",
        f"{separation.student.label}+{separation.assistant.label}",
        assisted,
    )
    rows[-1]["student_mflops"] = separation.student_mflops
    rows[-1]["assistant_mflops"] = separation.assistant_mflops
    save_assisted(assisted, separation, out_dir / "assisted_student.pt")

    if "feature_kd" in config.baselines:
        torch.manual_seed(_stage_seed(config.seed, "feature_kd"))
        plain = AssistedStudent(original.build_backbone(), None)
        train_phases("feature_kd", plain, lambda: None)
        add_row("feature KD (unseparated)", original.label, plain.student)

    result = RunResult(
        rows,
        stages,
        None,
        assisted,
        False,  # the teacher's feature maps are computed per batch
        validation | {"indices": "in validation_split.json"},
    )
    report = result.to_dict() | {"separation": separation.to_dict()}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.txt").write_text(result.table() + "\n")
    log("\n" + result.table())
    return result
