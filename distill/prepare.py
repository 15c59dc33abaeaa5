"""What every residual method starts from (``Prepared``): the data, D_v and the trained (or
loaded, or reused) teacher, gated on D_v (``distill.gate``), with the report rows they measure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.config import ConfigError, Loc
from distill.data import (
    DataBundle,
    DatasetError,
    DatasetInfo,
    ValidationSplit,
    dataset_labels,
    load_dataset,
    num_samples,
    validation_split,
)
from distill.gate import gate
from distill.methods import MethodConfig
from distill.models import NetSpec, complexity
from distill.report import Role, Row
from distill.residual import (
    dataset_energy,
    gi_over_c1_to_teacher,
    gi_per_sample,
    l2_to_teacher,
    stage_seed,
)
from distill.stages import StageStore, stage_key
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
    def ratio(self) -> float | None: ...
    @property
    def max_stages(self) -> int | None: ...
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
    def baselines(self) -> Sequence[str]: ...

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
        return data_key(self.config)

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
            gi_over_c1_to_T=None
            if self.fixed is None
            else gi_over_c1_to_teacher(gi_per_sample(logits, self.t_test), self.fixed),
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
    data = _load_data(config, declared_classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (out_dir / "preprocessing.json").write_text(
        json.dumps(data.info.preprocessing.to_dict(), indent=2)
    )
    split = validation_split(num_samples(data.train_eval), seed=config.seed, size=config.val_size)
    (out_dir / "validation_split.json").write_text(json.dumps(split.to_dict()))
    source = teacher if isinstance(teacher, TeacherSource) else teacher(data.info)
    d_v = split.subset(data.train_eval)
    stages: list[dict[str, Any]] = []
    net, t_key, digest = _teacher(config, source, data, d_v, store, progress, stages)
    device = resolve_device(config.device)
    val_labels = torch.tensor(dataset_labels(d_v))
    t_val = predict_logits(net.to(device), d_v, device=device)[0]
    identity = {
        "arch": source.label,
        "kind": source.kind,
        "digest": digest[:16],
        "id": f"{source.label}@{digest[:12]}",
        "val_accuracy": accuracy(t_val, val_labels),
    }
    warnings = gate(
        config, net, d_v, data.info, device, identity, store,
        (t_key, split.digest, data_key(config)), stages,
    )  # fmt: skip
    t_test = predict_logits(net, data.test, device=device)[0]
    prepared = Prepared(
        config, data, split, d_v, device, store, out_dir, progress, store.log, net, source, t_key,
        t_test, torch.tensor(dataset_labels(data.test)), teacher_mflops(net, data.info), val_labels,
        identity, stages,
    )  # fmt: skip
    for warning in warnings:
        prepared.warn(warning)
    return prepared


def _load_data(config: RunSettings, declared_classes: Sequence[tuple[Loc, int]]) -> DataBundle:
    """The run's data, checked against what the config declares of it."""
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
    return data


def _teacher(
    config: RunSettings,
    source: TeacherSource,
    data: DataBundle,
    d_v: Dataset[tuple[Tensor, int]],
    store: StageStore,
    progress: bool,
    stages: list[dict[str, Any]],
) -> tuple[nn.Module, str, str]:
    """The teacher network (loaded from ``teacher_checkpoint``, else trained as a stage), its
    stage key and its digest; in eval mode."""
    torch.manual_seed(stage_seed(config.seed, "teacher"))
    if config.teacher_checkpoint is not None:
        path = config.teacher_checkpoint
        net = _load_teacher(source, path, data.info)
        digest = file_digest(path)
        t_key = stage_key("teacher", {"checkpoint": path, "sha256": digest})
        store.log(f"teacher {source.label}: loaded from {path} (sha256 {digest[:12]})")
        return net.eval(), t_key, digest
    if source.spec is None:
        raise ConfigError.at(("teacher_checkpoint",), f"the file of the {source.kind} teacher")
    net = source.spec.build()
    t_cfg = config.train_config(teacher=True)
    result = store.train(
        "teacher",
        {"net": source.spec.to_dict(), "train": t_cfg.to_dict(), **data_key(config)},
        {"model": net},
        task=Supervised(net),
        train_data=data.train,
        config=t_cfg,
        desc=f"teacher {source.label}",
        progress=progress,
        eval_data=d_v,
    )
    stages.append(result.summary())
    return net.eval(), result.key, result.key


def data_key(config: RunSettings) -> dict[str, Any]:
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
