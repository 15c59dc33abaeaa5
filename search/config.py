"""The run config: one pydantic schema for YAML files, the CLI and the HTTP API (``/docs`` documents
every field; a wrong type is a 422 whose ``loc`` names it).

Its networks (teacher, student, res-students) are the discriminated unions of ``search.nets``;
its KD settings (``kd``, ``student_kd``) the union of the registered KD methods
(``distill.methods``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from distill.baselines import BASELINES, Baseline
from distill.catalog import DatasetInfo
from distill.config import ConfigError, ConfigModel, Flag, Loc, PathText, require
from distill.data import DATASETS, DatasetError, dataset_entry, dataset_info, peek_info
from distill.methods import KDConfig, MethodConfig, method_union
from distill.teachers import CheckpointError, teacher_kind
from distill.train import (
    PAPER_PRESETS,
    PRESETS,
    TrainConfig,
    TrainOverrides,
    preset,
    resolve_device,
)
from search.budget import BudgetError, check_budget
from search.nets import (
    GenotypeNet,
    NetConfig,
    ProgramNet,
    SearchedNet,
    Teacher,
    TeacherConfig,
    ZooNet,
    check_teacher_checkpoint,
    teacher_kind_of,
)
from search.nets import spec_of as spec_of  # the public path of the networks' specs
from search.run import shape_for

# the fields that name a trained network's weights (a file; over the API, an upload)
CHECKPOINTS: Final = ("teacher_checkpoint", "student_checkpoint")
if TYPE_CHECKING:
    KDSettings = MethodConfig
else:  # the registered KD methods' settings, told apart by ``method`` (plug-ins included)
    KDSettings = method_union()


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
    kd: KDSettings = Field(
        default_factory=KDConfig,
        description="the KD method of S0 and the res-students and its settings; method: kd "
        "(default), dml, relational or a plug-in's (entry-point group reskd.methods)",
    )
    student_kd: KDSettings | None = Field(
        None, description="S0's KD settings when they differ from the res-students' (default: kd)"
    )
    ratio: float | None = Field(
        0.9,
        gt=0,
        le=1,
        description="Algorithm 1's termination: stop after the first res-student whose S_i has "
        "Energy(S_i, D_v) > ratio x Energy(T, D_v) (the paper: 0.9); null turns termination off, "
        "so every stage asked for (max_stages) trains, as in the paper's ablations (Tables II-III)",
    )
    max_stages: int | None = Field(
        None,
        ge=0,
        le=64,
        description="the most res-students to train (default: len(res_students); the last entry "
        "repeats beyond); with ratio null, exactly this many",
    )
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
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="devices one job trains on, data-parallel (a process each: NCCL on GPUs, "
        "gloo on CPUs; batch_size is the global batch); a service worker reserves them",
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
        return preset(
            self.preset, seed=self.seed, device=self.device, devices=self.devices, **overrides
        )

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
            known = not dataset_entry(self.dataset).from_data or self.root is not None
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
        if dataset_entry(self.dataset).from_data and self.root is None:
            return  # classes unknown until the data is read
        try:
            check_teacher_checkpoint(teacher, info, self.teacher_checkpoint)
        except CheckpointError as exc:
            raise ConfigError.at(("teacher_checkpoint",), str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
