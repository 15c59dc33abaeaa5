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
    ValidationSplit,
    dataset_labels,
    load_dataset,
    num_samples,
    validation_split,
)
from distill.losses import Objective
from distill.models import NetSpec, complexity
from distill.report import Report, Role, Row
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
from distill.stages import StageResult, StageStore, stage_key
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
    t_spec: NetSpec
    t_key: str
    t_test: Tensor
    labels: Tensor
    t_mflops: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    fixed: Tensor | None = None  # Table VIII's samples (fixed_by_residuals), once S_n is known

    @property
    def data_key(self) -> dict[str, Any]:
        c = self.config
        return {"dataset": c.dataset, "root": c.root, "augment": c.augmented}

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
        **extra: Any,
    ) -> Row:
        effective = mflops if adaptive_mflops is None else adaptive_mflops
        return Row(
            model=name,
            role=role,
            arch=arch,
            accuracy=accuracy(logits, self.labels),
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
        cost = complexity(self.teacher, self.data.info)
        return self.row("T", "teacher", self.t_spec.label, self.t_test, cost.params, cost.mflops)

    def model_row(self, name: str, role: Role, arch: str, model: nn.Module, **extra: Any) -> Row:
        cost = complexity(model, self.data.info)
        logits = predict_logits(model.to(self.device).eval(), self.data.test, device=self.device)
        return self.row(name, role, arch, logits[0], cost.params, cost.mflops, **extra)


def prepare(
    config: RunSettings,
    *,
    teacher: NetSpec | Callable[[Any], NetSpec],
    out_dir: Path,
    store: StageStore,
    progress: bool = True,
    declared_classes: Sequence[tuple[Loc, int]] = (),
) -> Prepared:
    """Load the data, draw D_v, train (or load, or reuse) the teacher. ``teacher`` may be a
    function of the dataset's info."""
    log = store.log
    data = load_dataset(config.dataset, root=config.root, augment=config.augmented)
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
    split = validation_split(num_samples(data.train_eval), seed=config.seed, size=config.val_size)
    (out_dir / "validation_split.json").write_text(json.dumps(split.to_dict()))
    t_spec = teacher if isinstance(teacher, NetSpec) else teacher(data.info)
    torch.manual_seed(stage_seed(config.seed, "teacher"))
    net = t_spec.build()
    stages: list[dict[str, Any]] = []
    if config.teacher_checkpoint is not None:
        load_checkpoint(net, config.teacher_checkpoint, "teacher_checkpoint", t_spec.label)
        t_key = stage_key("teacher", {"checkpoint": config.teacher_checkpoint})
        log(f"teacher {t_spec.label}: loaded from {config.teacher_checkpoint}")
    else:
        t_cfg = config.train_config(teacher=True)
        data_key = {"dataset": config.dataset, "root": config.root, "augment": config.augmented}
        result = store.train(
            "teacher",
            {"net": t_spec.to_dict(), "train": t_cfg.to_dict(), **data_key},
            {"model": net},
            task=Supervised(net),
            train_data=data.train,
            config=t_cfg,
            desc=f"teacher {t_spec.label}",
            progress=progress,
        )
        t_key = result.key
        stages.append(result.summary())
    net.eval()
    device = resolve_device(config.device)
    t_test = predict_logits(net.to(device), data.test, device=device)[0]
    return Prepared(
        config, data, split, split.subset(data.train_eval), device, store, out_dir, progress, log,
        net, t_spec, t_key, t_test, torch.tensor(dataset_labels(data.test)),
        complexity(net, data.info).mflops, stages,
    )  # fmt: skip


def load_checkpoint(net: nn.Module, path: str, field_name: str, label: str) -> None:
    """A trained network's weights into ``net``: a plain state dict, or one under ``state_dict``
    or ``model`` (a stage's ``weights.pt``). A file that does not fit ``net`` is the config's
    error, named by ``field_name``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise ConfigError.at((field_name,), f"not a PyTorch state dict: {exc}") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise ConfigError.at((field_name,), f"not a state dict (a {type(state).__name__})")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ConfigError.at((field_name,), f"does not fit {label}: {first[0].strip()}") from None


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
        if res.search is not None:
            self.searches.append({"network": stage.name, **res.search})
        net, result = self._train(stage, res)
        self.previous_key = result.key
        self.nets.append(net)
        self.specs.append(res.spec)
        r_val = p.logits_on(net, p.d_v)
        self.s_val = r_val if self.s_val is None else self.s_val + r_val
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
            base=None if stage.cache else stage.base,
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
            desc=f"{stage.name} {res.spec.label}", progress=p.progress,
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
        costs = [complexity(net, p.data.info) for net in self.nets]
        combined = CombinedStudent(
            self.nets[0], self.nets[1:], threshold=threshold, specs=self.specs,
            mflops=[c.mflops for c in costs],
        )  # fmt: skip
        combined.save(p.out_dir / "combined_student.pt")
        adaptive = evaluate_adaptive(combined, p.data.test, device=p.device)
        stage_logits = list(torch.stack(self.test_logits).cumsum(dim=0))  # S0, S1, ..., S_n
        p.fixed = fixed_by_residuals(stage_logits, p.labels) if len(stage_logits) > 1 else None
        rows = [p.teacher_row()]
        params, mflops = 0, 0.0
        for i, (running, cost) in enumerate(zip(stage_logits, costs, strict=True)):
            params += cost.params
            mflops += cost.mflops
            arch = "-".join(s.label for s in self.specs[: i + 1])
            rows.append(p.row(f"S{i}", "stage", arch, running, params, mflops))
        rows.append(
            p.row(
                f"S{len(self.nets) - 1} adaptive", "adaptive", rows[-1].arch, adaptive.logits,
                params, mflops, adaptive_mflops=adaptive.expected_mflops,
                stopped_after=adaptive.stage_histogram,
            )
        )  # fmt: skip
        for kind in p.config.baselines:
            rows.append(baseline_row(kind, p, self.specs[:2], self.t_train))
        report = Report(
            rows, p.stages, threshold, combined, self.cached,
            p.split.to_dict() | {"indices": f"{p.split.size} indices in validation_split.json"},
            self.searches, deviations=p.config.deviations(),
            extra={} if p.fixed is None else {"gi_fixed_samples": int(p.fixed.sum())},
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


def run_reskd(prepared: Prepared, sources: Callable[[int], Source]) -> Report:
    """Algorithm 1: S0 and res-students from ``sources(i)`` until Energy says stop."""
    algorithm = ResKD(prepared)
    for i in range(prepared.config.stages + 1):  # i = 0 is S0
        if algorithm.step(i, sources(i)):
            break
    return algorithm.finish()
