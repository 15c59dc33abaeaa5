"""The networks of a run config: a teacher, S0 or a res-student, each one of a discriminated union
(a zoo model, ``resnet8`` or ``{model: resnet8, width: 0.5}``; the network of a given genotype,
``{genotype: {...}, channels: C, layers: L}``; one found by a search under a budget, ``{search:
{budget_mflops: ..., ...}}``; a teacher also from torchvision, timm or a program file), and the
buildable specs they stand for.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Union, cast

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    create_model,
    field_validator,
)

from distill.catalog import DatasetInfo
from distill.config import ConfigModel, Flag
from distill.models import GENOTYPE_MODEL, NetSpec
from distill.teachers import (
    TEACHER_KINDS,
    check_program,
    fitted,
    known_arch,
    read_state_dict,
    teacher_kind,
)
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
    """A network of a model library by name: one model per teacher kind that builds by name
    (``distill.teachers.TEACHER_KINDS``), whose field is the kind's name (``{torchvision:
    resnet18}``); made from the registry by :func:`library_net`."""

    num_classes: int | None = Field(None, ge=1, description="if given, must match the dataset")

    searched: ClassVar[bool] = False
    kind: ClassVar[str]

    @property
    def arch(self) -> str:
        return str(getattr(self, self.kind))


@cache
def library_net(name: str) -> type[LibraryNet]:
    """The config model of the teacher kind ``name`` (one that builds networks by name)."""
    kind = teacher_kind(name)
    field = Annotated[str, AfterValidator(known_arch(name))]
    model = create_model(  # type: ignore[call-overload]
        "".join(part.title() for part in name.replace("_", "-").split("-")) + "Net",
        __base__=LibraryNet,
        __doc__=f"{kind.description}; with ``teacher_checkpoint``, its local weights.",
        **{name: (field, Field(description=f"the architecture's name ({kind.description})"))},
    )
    model.kind = name
    return cast(type[LibraryNet], model)


def _program_kinds() -> list[str]:
    return [name for name, kind in TEACHER_KINDS.items() if kind.load is not None]


def _program_kind(name: str) -> str:
    if name not in _program_kinds():
        raise ValueError(
            f"unknown program format {name!r}; registered: {', '.join(_program_kinds())}"
        )
    return name


class ProgramNet(ConfigModel):
    """A user's own architecture as a file (``teacher_checkpoint``), read by a teacher kind that
    loads files (``torchscript``: ``torch.jit.save``; ``exported-program``: ``torch.export.save``,
    .pt2; or a plug-in's), used as a frozen black box that gives logits: logit distillation only
    (method reskd)."""

    program: Annotated[str, AfterValidator(_program_kind)] = Field(
        description="the file's format: a teacher kind that reads files",
        json_schema_extra={"enum": cast(Any, _program_kinds())},
    )
    num_classes: int | None = Field(None, ge=1, description="if given, must match the dataset")

    searched: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return self.program


def _library_kinds() -> list[str]:
    return [name for name, kind in TEACHER_KINDS.items() if kind.build is not None]


def _net_tag(raw: Any) -> str:
    if isinstance(raw, LibraryNet):
        return f"{raw.kind}-net"
    if isinstance(raw, ProgramNet):
        return "program-net"
    if isinstance(raw, Mapping):
        for key in (*_library_kinds(), "program"):
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


NetConfig = Annotated[
    Annotated[ZooNet, Tag("zoo-net")]
    | Annotated[GenotypeNet, Tag("genotype-net")]
    | Annotated[SearchedNet, Tag("searched-net")],
    Discriminator(_net_tag),
    BeforeValidator(_named),
]


def teacher_union() -> Any:
    """The type of a ``teacher`` field: a zoo, genotype or searched network, one model per
    registered teacher kind that builds by name, and a program file (built when the config that
    holds it is defined, so a plug-in's kind joins it)."""
    libraries = tuple(Annotated[library_net(k), Tag(f"{k}-net")] for k in _library_kinds())
    members = (
        Annotated[ZooNet, Tag("zoo-net")],
        Annotated[GenotypeNet, Tag("genotype-net")],
        Annotated[SearchedNet, Tag("searched-net")],
        *libraries,
        Annotated[ProgramNet, Tag("program-net")],
    )
    return Annotated[Union[members], Discriminator(_net_tag), BeforeValidator(_named)]  # noqa: UP007


if TYPE_CHECKING:
    TeacherConfig = ZooNet | GenotypeNet | SearchedNet | LibraryNet | ProgramNet
else:
    TeacherConfig = teacher_union()
Teacher = ZooNet | GenotypeNet | LibraryNet | ProgramNet


def teacher_kind_of(net: Teacher | SearchedNet) -> str:
    """The teacher kind (``distill.teachers.TEACHER_KINDS``) of a teacher config."""
    return "zoo" if isinstance(net, ZooNet | GenotypeNet | SearchedNet) else net.kind


def teacher_spec(net: Teacher, info: DatasetInfo) -> NetSpec | None:
    """The buildable spec of a teacher (None for a program, which is its file)."""
    if isinstance(net, ProgramNet):
        return None
    if isinstance(net, LibraryNet):
        return NetSpec(teacher_kind(net.kind).model(net.arch), 1.0, info.num_classes, info.in_chans,
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
    net = TypeAdapter(TeacherConfig).validate_json(net_json)
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
