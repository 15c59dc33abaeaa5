"""The run config: one pydantic schema for YAML files, the CLI and the HTTP API (``/docs`` documents
every field; a wrong type is a 422 whose ``loc`` names it).

A network is one of three (a discriminated union): a zoo model (``resnet8`` or ``{model: resnet8,
width: 0.5}``), the network of a given genotype (``{genotype: {...}, channels: C, layers: L}``) or
one found by a search under a budget (``{search: {budget_mflops: ..., ...}}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from distill.catalog import FOLDER_DATASETS, DatasetInfo
from distill.config import ConfigError, ConfigModel, Flag, Loc, PathText, parse, require
from distill.data import DATASETS, DatasetError, dataset_info, peek_info
from distill.models import GENOTYPE_MODEL, NetSpec
from distill.residual import MethodConfig
from distill.reskd import BASELINES, Baseline
from distill.teachers import (
    CheckpointError,
    check_program,
    fitted,
    known_arch,
    read_state_dict,
    teacher_kind,
)
from distill.train import (
    PAPER_PRESETS,
    PRESETS,
    TrainConfig,
    TrainOverrides,
    preset,
    resolve_device,
)
from search.budget import BudgetError, check_budget
from search.run import shape_for
from search.spec import SearchSpec
from space.genotypes import Genotype
from space.zoo import MODELS

SEARCHED: Final = "searched"  # the ``model`` of a network found by a search


class ZooNet(ConfigModel):
    """A handcrafted network of the zoo."""

    model: str = Field(
        description=f"one of {', '.join(MODELS)}", json_schema_extra={"enum": list(MODELS)}
    )
    width: float = Field(1.0, gt=0, le=64, description="channel width multiplier")
    num_classes: int | None = Field(None, ge=1, description="if given, must match the dataset")

    @field_validator("model")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(MODELS)}")
        return value

    searched: ClassVar[bool] = False


class GenotypeNet(ConfigModel):
    """The network of a given genotype (DARTS's format)."""

    model: Literal["genotype"] = GENOTYPE_MODEL
    genotype: dict[str, Any] = Field(description="{normal: [[op, input], ...], reduce: [...]}")
    channels: int = Field(ge=2, le=512, multiple_of=2, description="initial channels (even)")
    layers: int = Field(ge=3, le=64, description="cells")
    auxiliary: Flag = False
    drop_path_prob: float = Field(0.0, ge=0, lt=1)
    width: float = Field(1.0, gt=0, le=64)
    num_classes: int | None = Field(None, ge=1)

    @field_validator("genotype")
    @classmethod
    def _genotype(cls, value: dict[str, Any]) -> dict[str, Any]:
        cells = [value.get(k) for k in ("normal", "reduce", "normal_concat", "reduce_concat")]
        if any(c is not None and (not isinstance(c, list) or len(c) > 32) for c in cells):
            raise ValueError("normal and reduce: lists of at most 32 [operation, input] pairs")
        try:
            return Genotype.from_dict(value).to_dict()  # names what is wrong with it
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ValueError):
                raise
            raise ValueError("normal and reduce: lists of [operation, input] pairs") from None

    searched: ClassVar[bool] = False


class SearchedNet(ConfigModel):
    """A network found by a search under a FLOPs budget."""

    model: Literal["searched"] = SEARCHED
    search: SearchSpec

    searched: ClassVar[bool] = True
    num_classes: ClassVar[None] = None


class LibraryNet(ConfigModel):
    """A network of a model library by name (its field is the library's name)."""

    num_classes: int | None = Field(None, ge=1, description="if given, must match the dataset")

    searched: ClassVar[bool] = False
    kind: ClassVar[str]

    @property
    def arch(self) -> str:
        return str(getattr(self, self.kind))


class TorchvisionNet(LibraryNet):
    """A torchvision classification model by name (``torchvision.models.list_models``); with
    ``teacher_checkpoint``, its local weights (torchvision's own files load as they are)."""

    torchvision: Annotated[str, AfterValidator(known_arch("torchvision"))] = Field(
        description="e.g. resnet18, mobilenet_v3_small, efficientnet_b0"
    )
    kind: ClassVar[str] = "torchvision"


class TimmNet(LibraryNet):
    """A timm model by name (the optional extra ``timm``) with a local checkpoint."""

    timm: Annotated[str, AfterValidator(known_arch("timm"))] = Field(
        description="a name timm.list_models() gives, e.g. resnet18"
    )
    kind: ClassVar[str] = "timm"


class ProgramNet(ConfigModel):
    """A user's own architecture as a file (``teacher_checkpoint``): a TorchScript module
    (``torch.jit.save``) or a ``torch.export`` program (``torch.export.save``, .pt2), used as a
    frozen black box that gives logits: logit distillation only (method reskd)."""

    program: Literal["torchscript", "exported-program"] = Field(description="the file's format")
    num_classes: int | None = Field(None, ge=1, description="if given, must match the dataset")

    searched: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return self.program


def _net_tag(raw: Any) -> str:
    if isinstance(raw, TorchvisionNet | TimmNet | ProgramNet):
        return f"{raw.kind}-net" if isinstance(raw, TorchvisionNet | TimmNet) else "program-net"
    if isinstance(raw, Mapping):
        for key in ("torchvision", "timm", "program"):
            if raw.get(key) is not None:
                return f"{key}-net"
        if raw.get("search") is not None or raw.get("model") == SEARCHED:
            return "searched-net"
        if raw.get("genotype") is not None or raw.get("model") == GENOTYPE_MODEL:
            return "genotype-net"
    elif isinstance(raw, SearchedNet | GenotypeNet):
        return "searched-net" if isinstance(raw, SearchedNet) else "genotype-net"
    return "zoo-net"


def _named(raw: Any) -> Any:
    return {"model": raw} if isinstance(raw, str) else raw


# the fields that name a trained network's weights (a file; over the API, an upload)
CHECKPOINTS: Final = ("teacher_checkpoint", "student_checkpoint")

NetConfig = Annotated[
    Annotated[ZooNet, Tag("zoo-net")]
    | Annotated[GenotypeNet, Tag("genotype-net")]
    | Annotated[SearchedNet, Tag("searched-net")],
    Discriminator(_net_tag),
    BeforeValidator(_named),
]


TeacherConfig = Annotated[
    Annotated[ZooNet, Tag("zoo-net")]
    | Annotated[GenotypeNet, Tag("genotype-net")]
    | Annotated[SearchedNet, Tag("searched-net")]
    | Annotated[TorchvisionNet, Tag("torchvision-net")]
    | Annotated[TimmNet, Tag("timm-net")]
    | Annotated[ProgramNet, Tag("program-net")],
    Discriminator(_net_tag),
    BeforeValidator(_named),
]
Teacher = ZooNet | GenotypeNet | TorchvisionNet | TimmNet | ProgramNet


def _listed(raw: Any) -> Any:
    return [raw] if isinstance(raw, str | Mapping) else raw


class AssistantConfig(ConfigModel):
    """The feature-residual assistant method (Gao et al.): ``student`` is split into S and A with
    ``separation`` of its MFLOPs for S. ``at_weight`` > 0 brings in attention transfer (1000 is
    Zagoruyko & Komodakis's weight): with ``at_mode: instead`` (the paper's "RKD + AT", section
    4.4) S mimics the teacher's attention maps of every block instead of its feature maps and A
    still learns the feature residual; ``at_mode: added`` adds AT to the feature loss of S and A
    (not in the paper)."""

    variant: Literal["plain", "progressive", "integrated"] = "integrated"
    separation: float = Field(0.9, gt=0, lt=1)
    at_weight: float = Field(0.0, ge=0, le=1e6)
    at_mode: Literal["instead", "added"] = "instead"


class RunConfig(ConfigModel):
    """A run: ``method: reskd`` (default; S0 and res-students on the logit residual) or
    ``method: assistant`` (the feature-map residual of Gao et al.)."""

    dataset: str = Field(
        description=f"one of {', '.join(DATASETS)}", json_schema_extra={"enum": list(DATASETS)}
    )
    teacher: TeacherConfig = Field(
        description="a zoo model (resnet20), a genotype network, {torchvision: NAME}, "
        "{timm: NAME} or {program: torchscript|exported-program} (the file in "
        "teacher_checkpoint)"
    )
    student: NetConfig
    res_students: Annotated[list[NetConfig], BeforeValidator(_listed)] = Field(
        default_factory=list, max_length=64, description="one per stage; the last one repeats"
    )
    method: Literal["reskd", "assistant"] = "reskd"
    assistant: AssistantConfig = Field(default_factory=AssistantConfig)
    root: PathText | None = Field(None, description="the dataset's local root (CIFAR, imagefolder)")
    augment: Flag | None = Field(
        None,
        description="the papers' training augmentation (CIFAR pad+crop+flip, ImageNet random "
        "resized crop+flip); default: on with the papers' presets (cifar, tiny-imagenet, "
        "imagenet), off with the CPU ones. false with a paper preset is allowed and reported",
    )
    image_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="the side of the square images the networks see; default: the data's own "
        "(an image folder's first image). Images of another size: short side resized, centre crop",
    )
    mean: list[float] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="per-channel mean after scaling pixels to [0, 1], replacing the dataset's: "
        "a given teacher must be fed as it was trained",
    )
    std: list[float] | None = Field(
        None, min_length=1, max_length=3, description="per-channel std, with mean"
    )
    allow_weak_teacher: Flag = Field(
        False,
        description="run on with a teacher under twice chance accuracy on D_v (a warning "
        "instead of an error)",
    )
    val_size: int = Field(500, ge=1, le=10_000_000, description="D_v's size")
    teacher_checkpoint: PathText | None = Field(
        None,
        description="a trained teacher's weights: a state dict (.pt/.pth, read weights-only, or "
        ".safetensors), or the program file of a {program: ...} teacher; over the API, an "
        "uploaded one",
    )
    student_checkpoint: PathText | None = Field(
        None,
        description="a trained S0's state dict (.pt) for the student network: S0 is loaded "
        "instead of trained by KD, and the res-students learn its residual; over the API, an "
        "uploaded one",
    )
    kd: MethodConfig = Field(default_factory=MethodConfig)
    student_kd: MethodConfig | None = Field(
        None, description="S0's KD settings when they differ from the res-students' (default: kd)"
    )
    ratio: float = Field(0.9, gt=0, le=1, description="stop when Energy(S_i) > ratio x Energy(T)")
    max_stages: int | None = Field(None, ge=0, le=64, description="default: len(res_students)")
    preset: str = Field(
        "cpu-small",
        description=f"one of {', '.join(PRESETS)}",
        json_schema_extra={"enum": list(PRESETS)},
    )
    train: TrainOverrides = Field(default_factory=TrainOverrides)
    teacher_train: TrainOverrides = Field(default_factory=TrainOverrides)
    nas_train: TrainOverrides = Field(
        default_factory=TrainOverrides,
        description="on top of train, for searched and genotype networks (the papers' NAS "
        "protocol: StacNAS's wd 3e-4 and cosine power annealing); their gradients are clipped "
        "at 5 unless this sets grad_clip",
    )
    baselines: list[Baseline] = Field(default_factory=list, max_length=3)
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:[0-9]{1,2})?)$",
        description="auto, cpu, mps, cuda or cuda:N",
    )

    @model_validator(mode="before")
    @classmethod
    def _paper_reading(cls, raw: Any) -> Any:
        """With a paper preset, eq. 3 is read literally unless ``kd.ce_on`` is given: the
        cross-entropy term applies to R_i (``ce_on: residual``), not to S_i."""
        if not isinstance(raw, Mapping) or raw.get("preset") not in PAPER_PRESETS:
            return raw
        kd = raw.get("kd", {})
        if isinstance(kd, MethodConfig):
            given = "ce_on" in kd.model_fields_set
            kd = kd.model_dump(exclude_unset=True)
        else:
            given = not isinstance(kd, Mapping) or "ce_on" in kd
        return raw if given else {**raw, "kd": {**kd, "ce_on": "residual"}}

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        try:
            dataset_info(value)
        except DatasetError as exc:
            raise ValueError(str(exc).removeprefix("dataset: ")) from None
        return value

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"must be one of {', '.join(PRESETS)}")
        return value

    @property
    def augmented(self) -> bool:
        """Whether training images are augmented (``augment``, else the preset's protocol)."""
        return self.augment if self.augment is not None else self.preset in PAPER_PRESETS

    def deviations(self) -> list[str]:
        """Settings that depart from the protocol of the paper preset they use (reported)."""
        if self.preset not in PAPER_PRESETS:
            return []
        found = []
        if self.augment is False:
            found.append(
                f"augment: false with preset {self.preset}: the papers train with augmentation "
                "(their accuracies assume it)"
            )
        if self.method == "reskd" and self.kd.ce_on != "residual":
            found.append(
                f"kd.ce_on: {self.kd.ce_on} with preset {self.preset}: the literal eq. 3 puts the "
                "cross-entropy term on R_i (ce_on: residual)"
            )
        if self.method == "reskd" and self.kd.residual_target != "residual":
            found.append(
                f"kd.residual_target: {self.kd.residual_target} with preset {self.preset}: eq. 3 "
                "compares R_i with T - S_(i-1) (residual_target: residual)"
            )
        return found

    @property
    def stages(self) -> int:
        return self.max_stages if self.max_stages is not None else len(self.res_students)

    def kd_for(self, i: int) -> MethodConfig:
        """The KD settings of stage ``i`` (0 = S0)."""
        return self.student_kd if i == 0 and self.student_kd is not None else self.kd

    def res_student(self, i: int) -> ZooNet | GenotypeNet | SearchedNet:
        """The res-student of stage ``i`` (1-based); the last entry repeats."""
        return self.res_students[min(i, len(self.res_students)) - 1]

    def train_config(self, *, teacher: bool = False, nas: bool = False) -> TrainConfig:
        """The training of the teacher, of a handcrafted student, or (``nas``) of a searched or
        genotype network, which trains as DARTS trains them: gradients clipped at norm 5 (without,
        a pooling-heavy cell diverged to NaN at lr 0.05 in one benchmark seed)."""
        overrides = {**self.train.settings(), **(self.teacher_train.settings() if teacher else {})}
        if nas:
            overrides = (
                {"grad_clip": 5.0}
                | {k: v for k, v in overrides.items() if k != "grad_clip"}
                | self.nas_train.settings()
            )
        return preset(self.preset, seed=self.seed, device=self.device, **overrides)

    def nets(self) -> list[tuple[Loc, Teacher | SearchedNet]]:
        return [(("teacher",), self.teacher), (("student",), self.student)] + [
            (("res_students", i), r) for i, r in enumerate(self.res_students)
        ]

    def data_info(self) -> DatasetInfo:
        """What the networks see of the dataset (an image folder's classes and size are read
        from its root, cheaply)."""
        return peek_info(
            self.dataset, root=self.root, image_size=self.image_size, mean=self.mean, std=self.std
        )

    def data_options(self) -> dict[str, Any]:
        """``load_dataset``'s keyword arguments of this run."""
        return {
            "root": self.root, "augment": self.augmented, "image_size": self.image_size,
            "mean": self.mean, "std": self.std,
        }  # fmt: skip

    def check(self) -> None:
        """What needs several fields or the outside world; fails before any training."""
        info = self.data_info()
        self._check_data(info)
        if self.method == "reskd" and self.max_stages != 0:
            require(bool(self.res_students), ("res_students",), "a non-empty list of res-students")
        for loc, net in self.nets():
            if isinstance(net, SearchedNet):
                require(
                    loc[0] != "teacher" and self.method == "reskd",
                    (*loc, "search"),
                    "only S0 and res-students of method reskd can be searched",
                )
                try:  # a budget below the space's smallest network fails now, not mid-run
                    check_budget(
                        shape_for(net.search, info),
                        net.search.budget_mflops,
                        net.search.min_channels,
                    )
                except BudgetError as exc:
                    field, _, msg = str(exc).partition(": ")
                    raise ConfigError.at((*loc, "search", field), msg) from None
                continue
            if isinstance(net, GenotypeNet):
                require(self.method == "reskd", (*loc, "genotype"), "needs method reskd")
            known = self.dataset not in FOLDER_DATASETS or self.root is not None
            if net.num_classes is not None and known:
                require(
                    net.num_classes == info.num_classes,
                    (*loc, "num_classes"),
                    f"must be {info.num_classes} (the classes of {self.dataset}), "
                    f"got {net.num_classes}",
                )
        self._check_teacher(info)
        allowed = BASELINES[self.method]
        for i, b in enumerate(self.baselines):
            require(b in allowed, ("baselines", i), f"a list of {', '.join(allowed)}")
        for name in CHECKPOINTS:
            given = getattr(self, name)
            if given is not None:
                require(Path(given).is_file(), (name,), f"no file at {given}")
        if self.student_checkpoint is not None:
            require(self.method == "reskd", ("student_checkpoint",), "needs method reskd")
            require(
                not isinstance(self.student, SearchedNet),
                ("student_checkpoint",),
                "needs a zoo or genotype student (the network the checkpoint's weights fit), "
                "not a searched one",
            )
        for name, teacher, nas in (
            ("train", False, False),
            ("teacher_train", True, False),
            ("nas_train", False, True),
        ):
            try:
                self.train_config(teacher=teacher, nas=nas)
            except ValueError as exc:
                raise ConfigError.at((name,), str(exc)) from None
        try:
            resolve_device(self.device)
        except ValueError as exc:
            raise ConfigError.at(("device",), str(exc).removeprefix("device: ")) from None

    def _check_data(self, info: DatasetInfo) -> None:
        require(
            info.needs_root or self.root is None,
            ("root",),
            f"none: {self.dataset} ships with a package (root is for CIFAR and image folders)",
        )
        require(
            (self.mean is None) == (self.std is None),
            ("mean" if self.mean is None else "std",),
            "mean and std go together (the normalisation a given teacher was trained with)",
        )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None:
                require(
                    len(values) == info.in_chans,
                    (name,),
                    f"{info.in_chans} value(s): {self.dataset} has {info.in_chans} channel(s)",
                )
        if self.std is not None:
            require(all(v > 0 for v in self.std), ("std",), "values > 0")

    def _check_teacher(self, info: DatasetInfo) -> None:
        """What a teacher kind needs, and its checkpoint against its network and the data."""
        teacher = self.teacher
        assert not isinstance(teacher, SearchedNet)  # refused before
        kind = teacher_kind(teacher_kind_of(teacher))
        if not kind.features:
            require(
                self.method == "reskd",
                ("method",),
                f"reskd with a {kind.name} teacher: the assistant method needs the teacher's "
                "feature maps, which only zoo teachers give (a black box or library model "
                "gives logits)",
            )
        if isinstance(teacher, ProgramNet):
            require(
                self.teacher_checkpoint is not None,
                ("teacher_checkpoint",),
                f"the {teacher.program} file of the teacher (teacher: {{program: ...}})",
            )
        if self.teacher_checkpoint is None or not Path(self.teacher_checkpoint).is_file():
            return
        if self.dataset in FOLDER_DATASETS and self.root is None:
            return  # classes unknown until the data is read
        try:
            check_teacher_checkpoint(teacher, info, self.teacher_checkpoint)
        except CheckpointError as exc:
            raise ConfigError.at(("teacher_checkpoint",), str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def teacher_kind_of(net: Teacher | SearchedNet) -> str:
    """The teacher kind (``distill.teachers.TEACHER_KINDS``) of a teacher config."""
    return "zoo" if isinstance(net, ZooNet | GenotypeNet | SearchedNet) else net.kind


def teacher_spec(net: Teacher, info: DatasetInfo) -> NetSpec | None:
    """The buildable spec of a teacher (None for a program, which is its file)."""
    if isinstance(net, ProgramNet):
        return None
    if isinstance(net, TorchvisionNet | TimmNet):
        return NetSpec(f"{net.kind}:{net.arch}", 1.0, info.num_classes, info.in_chans,
                       info.image_size)  # fmt: skip
    return spec_of(net, info)


def teacher_label(net: Teacher, info: DatasetInfo) -> str:
    spec = teacher_spec(net, info)
    return spec.label if spec is not None else f"{teacher_kind_of(net)} program"


def check_teacher_checkpoint(net: Teacher, info: DatasetInfo, path: str) -> None:
    """A :class:`CheckpointError` (one line) unless the file at ``path`` fits the teacher ``net``
    on ``info``'s data: keys and shapes, and the classes of its classifier."""
    p = Path(path)
    _check_fit(net.model_dump_json(), info, str(p), p.stat().st_mtime)


@cache
def _check_fit(net_json: str, info: DatasetInfo, path: str, mtime: float) -> None:
    del mtime  # part of the cache key: a changed file is checked again
    net = parse(RunConfig, {"dataset": "digits", "teacher": json.loads(net_json),
                            "student": "resnet8"}).teacher  # fmt: skip
    assert not isinstance(net, SearchedNet)
    if isinstance(net, ProgramNet):
        check_program(path, net.program, input_shape=info.input_shape,
                      num_classes=info.num_classes, dataset=info.name)  # fmt: skip
        return
    spec = teacher_spec(net, info)
    assert spec is not None
    fitted(spec.build(), read_state_dict(path), label=spec.label, num_classes=info.num_classes,
           dataset=info.name)  # fmt: skip


def spec_of(net: ZooNet | GenotypeNet, info: Any) -> NetSpec:
    """The buildable spec of a handcrafted or given-genotype network on ``info``'s data."""
    if isinstance(net, GenotypeNet):
        return NetSpec.of_genotype(
            Genotype.from_dict(net.genotype),
            info,
            channels=net.channels,
            layers=net.layers,
            auxiliary=net.auxiliary,
            drop_path_prob=net.drop_path_prob,
        )
    return NetSpec.for_dataset(net.model, info, width=net.width)


def load_config(path: Path) -> RunConfig:
    """A run config from a YAML or JSON file."""
    import yaml

    if not path.is_file():
        raise ConfigError.at(("config",), f"no file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as exc:  # one line (PyYAML's own message spans several)
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError.at(
            ("config",), f"{path} is not valid YAML or JSON{at}: {problem or exc}"
        ) from None
    if not isinstance(raw, Mapping):
        raise ConfigError.at(("config",), f"{path} must hold a mapping of fields")
    return RunConfig.from_dict(raw)
