"""ResKD's Algorithm 1 (Li et al.) as stored stages: teacher -> S0 by KD -> res-students R_i on
the residual T - S_{i-1} until Energy(S_i, D_v) > ratio * Energy(T, D_v) -> TH_energy (eq. 10) ->
the sample-adaptive combined student (Algorithm 2) and the report.

Each res-student comes from a :class:`Source`: a zoo network or a given genotype
(:func:`fixed`), or one a caller searches first (``search.pipeline``): this module never imports
the search. A source sees the stage's inputs (the teacher, S_{i-1}, cached logits) and returns the
network to train.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.baselines import baseline_row
from distill.combined import CombinedStudent, LogitSum, evaluate_adaptive
from distill.config import ConfigError, Loc
from distill.data import (
    DataBundle,
    DatasetError,
    DatasetInfo,
    ValidationSplit,
    dataset_info,
    dataset_labels,
    load_dataset,
    num_samples,
    validation_split,
)
from distill.losses import Objective
from distill.models import NetSpec, complexity
from distill.report import Report, Role, Row, repair_text
from distill.residual import (
    MethodConfig,
    ResidualDistillation,
    dataset_energy,
    fixed_by_residuals,
    gi_over_c1,
    gi_over_c1_fixed,
    l2_to_teacher,
    should_stop,
    stage_seed,
    zero_output,
)
from distill.stages import StageResult, StageStore, stage_key, write_atomic
from distill.teachers import (
    BlackBox,
    CheckpointError,
    check_program,
    file_digest,
    fitted,
    load_program,
    read_state_dict,
)
from distill.train import Supervised, TrainConfig, accuracy, predict_logits, resolve_device

Baseline = Literal["ensemble", "together", "feature_kd"]
BASELINES: dict[str, tuple[Baseline, ...]] = {
    "reskd": ("ensemble", "together"),
    "assistant": ("feature_kd",),
}


class RunSettings(Protocol):
    """What Algorithm 1 reads of a run config (``search.config.RunConfig``)."""

    @property
    def dataset(self) -> str: ...
    @property
    def root(self) -> str | None: ...
    @property
    def augmented(self) -> bool: ...
    def deviations(self) -> list[str]: ...
    @property
    def val_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def ratio(self) -> float: ...
    @property
    def stages(self) -> int: ...
    @property
    def teacher_checkpoint(self) -> str | None: ...
    @property
    def allow_weak_teacher(self) -> bool: ...
    def data_options(self) -> dict[str, Any]: ...
    @property
    def student_checkpoint(self) -> str | None: ...
    @property
    def baselines(self) -> Sequence[Baseline]: ...

    def kd_for(self, i: int) -> MethodConfig: ...
    def train_config(self, *, teacher: bool = False, nas: bool = False) -> TrainConfig: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Prepared:
    """The data, D_v and the trained teacher: what both residual methods start from."""

    config: RunSettings
    data: DataBundle
    split: ValidationSplit
    d_v: Dataset[tuple[Tensor, int]]
    device: torch.device
    store: StageStore
    out_dir: Path
    progress: bool
    log: Callable[[str], None]
    teacher: nn.Module
    t_source: TeacherSource
    t_key: str
    t_test: Tensor
    labels: Tensor
    t_mflops: float
    val_labels: Tensor
    identity: dict[str, Any]  # the teacher's: arch, kind, digest, id, D_v accuracy
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a user should know of the outcome
    fixed: Tensor | None = None  # Table VIII's samples (fixed_by_residuals), once S_n is known

    def warn(self, message: str) -> None:
        """Keep ``message`` for the report (and the job's warnings) and log it."""
        self.warnings.append(message)
        self.log(f"warning: {message}")

    @property
    def data_key(self) -> dict[str, Any]:
        return _data_key(self.config)

    def logits_on(self, model: nn.Module, dataset: Dataset[tuple[Tensor, int]]) -> Tensor:
        return predict_logits(model.to(self.device), dataset, device=self.device)[0]

    def row(
        self,
        name: str,
        role: Role,
        arch: str,
        logits: Tensor,
        params: int,
        mflops: float,
        adaptive_mflops: float | None = None,
        *,
        val_logits: Tensor | None = None,
        **extra: Any,
    ) -> Row:
        """A report row from ``logits`` on the test set (and ``val_logits`` on D_v)."""
        effective = mflops if adaptive_mflops is None else adaptive_mflops
        return Row(
            model=name,
            role=role,
            arch=arch,
            accuracy=accuracy(logits, self.labels),
            val_accuracy=None if val_logits is None else accuracy(val_logits, self.val_labels),
            mparams=params / 1e6,
            mflops=mflops,
            adaptive_mflops=effective,
            pct_of_T=100 * effective / self.t_mflops,
            energy=dataset_energy(logits),
            l2_to_T=l2_to_teacher(logits, self.t_test),
            gi_over_c1=gi_over_c1(logits, self.t_test),
            gi_fixed=None
            if self.fixed is None
            else gi_over_c1_fixed(logits, self.t_test, self.fixed),
            **extra,
        )

    def teacher_row(self) -> Row:
        params = sum(p.numel() for p in self.teacher.parameters())
        return self.row(
            "T", "teacher", self.t_source.label, self.t_test, params, self.t_mflops,
            val_logits=self.logits_on(self.teacher, self.d_v),
        )  # fmt: skip

    def model_row(self, name: str, role: Role, arch: str, model: nn.Module, **extra: Any) -> Row:
        cost = complexity(model, self.data.info)
        logits = self.logits_on(model.eval(), self.data.test)
        val = self.logits_on(model, self.d_v)
        return self.row(name, role, arch, logits, cost.params, cost.mflops, val_logits=val, **extra)


@dataclass(frozen=True)
class TeacherSource:
    """The teacher of a run: its kind (``distill.teachers.TEACHER_KINDS``), the spec that builds
    it (None for a program, whose file is the checkpoint) and the name a person reads."""

    kind: str
    spec: NetSpec | None
    label: str


WEAK_TEACHER = 2.0  # a teacher under this many times chance accuracy on D_v is stopped


def prepare(
    config: RunSettings,
    *,
    teacher: TeacherSource | Callable[[DatasetInfo], TeacherSource],
    out_dir: Path,
    store: StageStore,
    progress: bool = True,
    declared_classes: Sequence[tuple[Loc, int]] = (),
) -> Prepared:
    """Load the data, draw D_v, train (or load, or reuse) the teacher and gate it on D_v.
    ``teacher`` may be a function of the dataset's info."""
    log = store.log
    data = load_dataset(config.dataset, **config.data_options())
    if num_samples(data.train) == 0 or num_samples(data.test) == 0:
        raise DatasetError(f"dataset: {config.dataset} has an empty training or test set")
    for loc, n in declared_classes:  # imagefolder's classes are known once it is read
        if n != data.info.num_classes:
            raise ConfigError.at(
                (*loc, "num_classes"),
                f"must be {data.info.num_classes} (the classes found in {config.dataset}), got {n}",
            )
    if config.val_size > num_samples(data.train_eval):
        raise ValueError(
            f"val_size: must be <= {num_samples(data.train_eval)} (the training set), "
            f"got {config.val_size}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (out_dir / "preprocessing.json").write_text(
        json.dumps(data.info.preprocessing.to_dict(), indent=2)
    )
    split = validation_split(num_samples(data.train_eval), seed=config.seed, size=config.val_size)
    (out_dir / "validation_split.json").write_text(json.dumps(split.to_dict()))
    source = teacher if isinstance(teacher, TeacherSource) else teacher(data.info)
    torch.manual_seed(stage_seed(config.seed, "teacher"))
    stages: list[dict[str, Any]] = []
    data_key = _data_key(config)
    if config.teacher_checkpoint is not None:
        path = config.teacher_checkpoint
        net = _load_teacher(source, path, data.info)
        digest = file_digest(path)
        t_key = stage_key("teacher", {"checkpoint": path, "sha256": digest})
        log(f"teacher {source.label}: loaded from {path} (sha256 {digest[:12]})")
    else:
        if source.spec is None:
            raise ConfigError.at(("teacher_checkpoint",), f"the file of the {source.kind} teacher")
        net = source.spec.build()
        t_cfg = config.train_config(teacher=True)
        result = store.train(
            "teacher",
            {"net": source.spec.to_dict(), "train": t_cfg.to_dict(), **data_key},
            {"model": net},
            task=Supervised(net),
            train_data=data.train,
            config=t_cfg,
            desc=f"teacher {source.label}",
            progress=progress,
            eval_data=split.subset(data.train_eval),
        )
        t_key = digest = result.key
        stages.append(result.summary())
    net.eval()
    device = resolve_device(config.device)
    d_v = split.subset(data.train_eval)
    val_labels = torch.tensor(dataset_labels(d_v))
    t_val = predict_logits(net.to(device), d_v, device=device)[0]
    identity = {
        "arch": source.label,
        "kind": source.kind,
        "digest": digest[:16],
        "id": f"{source.label}@{digest[:12]}",
        "val_accuracy": accuracy(t_val, val_labels),
    }
    warnings = _gate(
        config, net, d_v, data.info, device, identity, store, (t_key, split.digest, data_key),
        stages,
    )  # fmt: skip
    t_test = predict_logits(net, data.test, device=device)[0]
    prepared = Prepared(
        config, data, split, d_v, device, store, out_dir, progress, log, net, source, t_key,
        t_test, torch.tensor(dataset_labels(data.test)), teacher_mflops(net, data.info), val_labels,
        identity, stages,
    )  # fmt: skip
    for warning in warnings:
        prepared.warn(warning)
    return prepared


def _data_key(config: RunSettings) -> dict[str, Any]:
    """What of the data a stage's result depends on (the settings left at their defaults are
    left out, so stored stages keep their keys)."""
    options = config.data_options()
    key = {"dataset": config.dataset, "root": options["root"], "augment": options["augment"]}
    return key | {k: options[k] for k in ("image_size", "mean", "std") if options[k] is not None}


def _load_teacher(source: TeacherSource, path: str, info: DatasetInfo) -> nn.Module:
    """The teacher's network with the file's weights (a program: the file itself), checked
    against the data's classes; a misfit is the config's error at ``teacher_checkpoint``."""
    try:
        if source.spec is None:
            check_program(path, source.kind, input_shape=info.input_shape,
                          num_classes=info.num_classes, dataset=info.name)  # fmt: skip
            return load_program(path, source.kind)
        net = source.spec.build()
        load_checkpoint(net, path, "teacher_checkpoint", source.label)
        return net
    except CheckpointError as exc:
        raise ConfigError.at(("teacher_checkpoint",), str(exc)) from None


IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GATE_MARGIN = 0.05  # another usual normalisation this much better on D_v: the run's is wrong
GATE_SAMPLES = 256  # D_v's first samples the other normalisations are tried on


def _normalisations(info: DatasetInfo, raw: Tensor) -> dict[str, tuple[list[float], list[float]]]:
    """The usual input normalisations a teacher may have been trained with: raw [0, 1] pixels,
    [-1, 1], ImageNet's, the dataset's catalogued one and D_v's own statistics."""
    c = info.in_chans

    def per(v: Sequence[float]) -> list[float]:
        return [round(float(x), 4) for x in (list(v) * c if len(v) == 1 else v)][:c]

    own = raw.transpose(0, 1).flatten(1)
    found = {
        "[0, 1] pixels": (per([0.0]), per([1.0])),
        "[-1, 1] pixels": (per([0.5]), per([0.5])),
        "the data's own statistics": (per(own.mean(1).tolist()), per(own.std(1).tolist())),
        f"{info.name}'s catalogued one": (
            per(dataset_info(info.name).mean),
            per(dataset_info(info.name).std),
        ),
    }
    if c == 3:
        found["ImageNet's"] = (list(IMAGENET_NORMALISATION[0]), list(IMAGENET_NORMALISATION[1]))
    return found


def _better_normalisation(
    net: nn.Module, d_v: Dataset[tuple[Tensor, int]], info: DatasetInfo, device: torch.device
) -> tuple[str, list[float], list[float], float, float] | None:
    """A usual normalisation under which the teacher does clearly better on D_v than under the
    run's (name, mean, std, its accuracy, the run's), or None."""
    n = min(GATE_SAMPLES, num_samples(d_v))
    xs, ys = zip(*(d_v[i] for i in range(n)), strict=True)
    x, y = torch.stack(list(xs)), torch.tensor(ys)
    shape = (1, info.in_chans, 1, 1)
    mean, std = torch.tensor(info.mean).view(shape), torch.tensor(info.std).view(shape)
    raw = x * std + mean

    def acc(m: Sequence[float], s: Sequence[float]) -> float:
        z = (raw - torch.tensor(m).view(shape)) / torch.tensor(s).view(shape)
        with torch.no_grad():
            logits = torch.cat([net(b.to(device)).cpu() for b in z.split(128)])
        return accuracy(logits, y)

    current = acc(info.mean, info.std)
    best = None
    for name, (m, s) in _normalisations(info, raw).items():
        if min(s) <= 0:
            continue
        a = acc(m, s)
        if a >= current + GATE_MARGIN and (best is None or a > best[3]):
            best = (name, m, s, a, current)
    return best


def _gate(
    config: RunSettings,
    net: nn.Module,
    d_v: Dataset[tuple[Tensor, int]],
    info: DatasetInfo,
    device: torch.device,
    identity: dict[str, Any],
    store: StageStore,
    keys: tuple[str, str, dict[str, Any]],
    stages: list[dict[str, Any]],
) -> list[str]:
    """The teacher gate: T's D_v accuracy, measured before anything trains on it, stops a given
    teacher near chance, or one that does clearly better under another usual normalisation than
    under the run's (unless ``allow_weak_teacher``: then it is a warning). A teacher the run
    trained itself near chance is a warning: it was fed as it will be."""
    t_key, split_digest, data_key = keys
    acc, chance = identity["val_accuracy"], 1 / info.num_classes
    line = f"T {identity['arch']} on D_v: {100 * acc:.2f}% (chance {100 * chance:.2f}%)"
    store.log(f"teacher gate: {line}")
    found: dict[str, Any] = {}

    def measure(directory: Path) -> None:
        # a teacher the run trained was fed the run's normalisation; a given one may not have been
        given = config.teacher_checkpoint is not None
        better = _better_normalisation(net, d_v, info, device) if given else None
        found["better"] = better
        record = identity | {"better_normalisation": better}
        write_atomic(directory / "gate.json", json.dumps(record, indent=2))

    result = store.compute(
        "gate", {"teacher": t_key, "split": split_digest, **data_key},
        desc=f"teacher gate: {line}", make=measure,
        load=lambda d: found.update(
            better=json.loads((d / "gate.json").read_text()).get("better_normalisation")
        ),
    )  # fmt: skip
    stages.append(result.summary() | {"val_accuracy": acc})
    problems = []
    if acc < WEAK_TEACHER * chance and config.teacher_checkpoint is None:
        # trained here, on this run's data as fed: too little training, not a mismatch
        return [
            f"the teacher this run trained scores {100 * acc:.2f}% on D_v, under "
            f"{WEAK_TEACHER:g}x chance ({100 * WEAK_TEACHER * chance:.2f}%): train it longer "
            "(teacher_train.epochs) or give a trained one (teacher_checkpoint)"
        ]
    if acc < WEAK_TEACHER * chance:
        problems.append(
            f"the teacher scores {100 * acc:.2f}% on D_v, under {WEAK_TEACHER:g}x chance "
            f"({100 * WEAK_TEACHER * chance:.2f}%). Likely causes: its normalisation (this run "
            f"feeds mean {list(info.mean)} std {list(info.std)}; give the teacher's own as mean "
            f"and std), its class order (output i must be class "
            f"{', '.join(info.classes[:3])}, ... in this order), or its input size "
            f"({info.image_size}x{info.image_size} here; set image_size)"
        )
    better = found.get("better")
    if better is not None:
        name, m, s, a, current = better
        problems.append(
            f"the teacher scores {100 * current:.2f}% on D_v with this run's normalisation "
            f"(mean {list(info.mean)} std {list(info.std)}) but {100 * a:.2f}% with {name} "
            f"(mean {m} std {s}): it was likely trained with that one; set mean and std to it"
        )
    if problems and not config.allow_weak_teacher:
        raise ConfigError.at(
            ("teacher_checkpoint",),
            f"{'; '.join(problems)}; allow_weak_teacher: true runs on anyway",
        )
    return problems


def teacher_mflops(net: nn.Module, info: DatasetInfo) -> float:
    """The teacher's MFLOPs by the product's counter; a black box by torch's FLOP counter
    (multiply-accumulates: its FLOPs / 2, the product's convention)."""
    if not isinstance(net, BlackBox):
        return complexity(net, info).mflops
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.cpu()(torch.zeros(1, *info.input_shape))
    return counter.get_total_flops() / 2 / 1e6


def load_checkpoint(net: nn.Module, path: str, field_name: str, label: str) -> None:
    """A trained network's weights into ``net``: a state dict (``.pt``/``.pth`` weights-only or
    ``.safetensors``; plain, or under ``state_dict`` or ``model``, as a stage's ``weights.pt``).
    A file that does not fit ``net`` is the config's error, named by ``field_name``, in one line."""
    try:
        state = fitted(net, read_state_dict(path), label=label)
    except CheckpointError as exc:
        raise ConfigError.at((field_name,), str(exc)) from None
    net.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# Res-students: where each stage's network comes from
# ------------------------------------------------------------------------------------------------


@dataclass
class StageInputs:
    """What a source sees at stage ``i`` (0 = S0): the objective of eq. 6 and what it reads."""

    i: int
    name: str  # "S0", "R1", ...
    method: MethodConfig
    objective: Objective
    teacher: nn.Module
    base: nn.Module | None  # S_{i-1} (None for S0)
    cache: tuple[Tensor, Tensor | None] | None  # cached (T, S_{i-1}) logits on the training set
    previous_key: str
    prepared: Prepared


@dataclass
class ResStudent:
    """The network a source gives for a stage, and what its stage key adds (a search's key)."""

    spec: NetSpec
    inputs: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # the search's record, when it was searched


class Source(Protocol):
    def __call__(self, stage: StageInputs) -> ResStudent: ...


def fixed(spec: NetSpec) -> Source:
    """A zoo network or a given genotype's network."""
    return lambda stage: ResStudent(spec)


# ------------------------------------------------------------------------------------------------
# Algorithm 1
# ------------------------------------------------------------------------------------------------


class ResKD:
    """S0, then R_1, R_2, ... one :meth:`step` at a time, then :meth:`finish`."""

    def __init__(self, prepared: Prepared) -> None:
        p = self.p = prepared
        self.cached = not p.data.augmented
        self.t_train = p.logits_on(p.teacher, p.data.train_eval) if self.cached else None
        self.e_teacher = dataset_energy(p.logits_on(p.teacher, p.d_v))
        self.nets: list[nn.Module] = []
        self.specs: list[NetSpec] = []
        self.s_val: Tensor | None = None
        self.val_logits: list[Tensor] = []  # S0, S1, ..., S_i on D_v
        self.s_train: Tensor | None = None
        self.test_logits: list[Tensor] = []
        self.searches: list[dict[str, Any]] = []
        self.previous_key = p.t_key
        p.log(
            f"teacher: Energy(T, D_v) = {self.e_teacher:.4f}; stop when Energy(S_i, D_v) > "
            f"{p.config.ratio} x {self.e_teacher:.4f} = {p.config.ratio * self.e_teacher:.4f}"
        )

    def inputs(self, i: int) -> StageInputs:
        method = self.p.config.kd_for(i)
        cache = (self.t_train, self.s_train) if self.t_train is not None else None
        return StageInputs(
            i, "S0" if i == 0 else f"R{i}", method, method.objective(), self.p.teacher,
            LogitSum(list(self.nets)) if self.nets else None, cache, self.previous_key, self.p,
        )  # fmt: skip

    def step(self, i: int, source: Source) -> bool:
        """Train stage ``i``'s network from ``source``; True when Energy says stop."""
        p, stage = self.p, self.inputs(i)
        res = source(stage)
        repair = (res.search or {}).get("repair")
        if repair and repair.get("operations_changed"):
            p.warn(f"{stage.name}: {repair_text(repair)}: the budget, not the search, chose them")
        if res.search is not None:
            self.searches.append({"network": stage.name, **res.search})
        net, result = self._train(stage, res)
        self.previous_key = result.key
        self.nets.append(net)
        self.specs.append(res.spec)
        r_val = p.logits_on(net, p.d_v)
        self.s_val = r_val if self.s_val is None else self.s_val + r_val
        self.val_logits.append(self.s_val)
        self.test_logits.append(p.logits_on(net, p.data.test))
        if self.cached:
            r_train = p.logits_on(net, p.data.train_eval)
            self.s_train = r_train if self.s_train is None else self.s_train + r_train
        e = dataset_energy(self.s_val)
        stop = i > 0 and should_stop(e, self.e_teacher, p.config.ratio)
        p.stages.append(
            result.summary()
            | {"network": stage.name, "arch": res.spec.label, "energy_dv": round(e, 5)}
        )
        p.log(
            f"S{i}: Energy(S{i}, D_v) = {e:.4f} ({100 * e / self.e_teacher:.1f}% of T)"
            + (" -> stop" if stop else "")
        )
        return stop

    def _train(self, stage: StageInputs, res: ResStudent) -> tuple[nn.Module, StageResult]:
        p, i, method = self.p, stage.i, stage.method
        torch.manual_seed(stage_seed(p.config.seed, f"stage{i}"))
        net = res.spec.build()
        if i == 0 and p.config.student_checkpoint is not None:
            return net, self._load_student(net, res.spec, p.config.student_checkpoint)
        peer = res.spec.build() if method.method == "dml" else None
        if i > 0 and method.zero_init_residual:
            for r in (net, peer):
                if r is not None:
                    zero_output(r)
        task = ResidualDistillation(
            net,
            objective=stage.objective,
            method=method,
            teacher=None if stage.cache else p.teacher,
            base=stage.base,  # D_v accuracy each epoch is that of S_i = S_{i-1} + R_i
            cache=stage.cache,
            peer=peer,
        )
        kind = "finetune" if res.inputs else "student" if i == 0 else "residual"
        stage_cfg = p.config.train_config(nas=res.spec.genotype is not None)
        payload = {
            "net": res.spec.to_dict(),
            "kd": method.for_stage(i),
            "train": stage_cfg.to_dict(),
            "input": stage.previous_key,
            "stage": i,
            **p.data_key,
            **res.inputs,
        }
        result = p.store.train(
            kind, payload, {"model": net}, task=task, train_data=p.data.train, config=stage_cfg,
            desc=f"{stage.name} {res.spec.label}", progress=p.progress, eval_data=p.d_v,
        )  # fmt: skip
        net.eval()
        return net, result

    def _load_student(self, net: nn.Module, spec: NetSpec, path: str) -> StageResult:
        """S0 given trained (``student_checkpoint``): loaded instead of trained. Its key names
        the file and the network, so the res-students trained on it are stored apart from those
        of a trained S0."""
        p = self.p
        load_checkpoint(net, path, "student_checkpoint", spec.label)
        net.eval()
        key = stage_key("student", {"checkpoint": path, "net": spec.to_dict(), "input": p.t_key})
        p.log(f"S0 {spec.label}: loaded from {path}")
        return StageResult("student", key, False, 0.0, Path(path).parent)

    def finish(self) -> Report:
        """TH_energy, the combined student (saved) and the report (written)."""
        p = self.p
        assert self.s_val is not None, "no stage ran"
        threshold = dataset_energy(self.s_val)  # eq. 10: TH_energy = Energy(S_n, D_v)
        thresholds = [dataset_energy(v) for v in self.val_logits]  # the same for every S_i
        val_acc = [accuracy(v, p.val_labels) for v in self.val_logits]
        best = max(range(len(val_acc)), key=lambda i: (val_acc[i], -i))  # ties: fewer networks
        for i in range(1, len(val_acc)):
            if val_acc[i] < val_acc[i - 1]:
                p.warn(
                    f"S{i} is below S{i - 1} on D_v ({100 * val_acc[i]:.2f}% < "
                    f"{100 * val_acc[i - 1]:.2f}%): R{i} lowered the accuracy"
                )
        if best < len(val_acc) - 1:
            p.warn(
                f"S{best} is the best student on D_v ({100 * val_acc[best]:.2f}%); the export "
                f"ships S{best} unless told otherwise (reskd export --stages N)"
            )
        costs = [complexity(net, p.data.info) for net in self.nets]
        combined = CombinedStudent(
            self.nets[0], self.nets[1:], threshold=threshold, specs=self.specs,
            mflops=[c.mflops for c in costs], thresholds=thresholds, deploy_stage=best,
            preprocessing=p.data.info.preprocessing.to_dict(),
        )  # fmt: skip
        combined.save(p.out_dir / "combined_student.pt")
        adaptive = evaluate_adaptive(combined, p.data.test, device=p.device)
        adaptive_val = evaluate_adaptive(combined, p.d_v, device=p.device)
        stage_logits = list(torch.stack(self.test_logits).cumsum(dim=0))  # S0, S1, ..., S_n
        p.fixed = fixed_by_residuals(stage_logits, p.labels) if len(stage_logits) > 1 else None
        rows = [p.teacher_row()]
        params, mflops = 0, 0.0
        for i, (running, cost) in enumerate(zip(stage_logits, costs, strict=True)):
            params += cost.params
            mflops += cost.mflops
            arch = "-".join(s.label for s in self.specs[: i + 1])
            rows.append(
                p.row(
                    f"S{i}", "stage", arch, running, params, mflops,
                    val_logits=self.val_logits[i],
                )
            )  # fmt: skip
        rows.append(
            p.row(
                f"S{len(self.nets) - 1} adaptive", "adaptive", rows[-1].arch, adaptive.logits,
                params, mflops, adaptive_mflops=adaptive.expected_mflops,
                stopped_after=adaptive.stage_histogram, val_logits=adaptive_val.logits,
            )
        )  # fmt: skip
        deployed = combined.truncated(best)
        shipped = evaluate_adaptive(deployed, p.data.test, device=p.device)
        for kind in p.config.baselines:
            rows.append(baseline_row(kind, p, self.specs[:2], self.t_train))
        report = Report(
            rows, p.stages, threshold, combined, self.cached,
            p.split.to_dict() | {"indices": f"{p.split.size} indices in validation_split.json"},
            self.searches, deviations=p.config.deviations(),
            extra={"teacher": p.identity} | {
                "thresholds": thresholds,
                "deploy": {
                    "stage": best, "model": f"S{best}", "threshold": deployed.threshold,
                    "val_accuracy": val_acc[best], "accuracy": shipped.accuracy,
                    "adaptive_mflops": shipped.expected_mflops,
                },
            } | ({} if p.fixed is None else {"gi_fixed_samples": int(p.fixed.sum())}),
            warnings=p.warnings,
        )  # fmt: skip
        report.write(p.out_dir)
        p.log("\n" + report.table())
        p.log(
            f"\nTH_energy = {threshold:.4f}; teacher and earlier students' logits "
            + (
                "cached once per stage"
                if self.cached
                else "computed per batch (random augmentation)"
            )
        )
        return report
