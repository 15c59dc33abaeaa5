"""Teachers from anywhere: the kinds of network a teacher may be, and their checkpoints checked.

A teacher is
- a network of the zoo (``resnet20``) or a given genotype's: built by ``NetSpec``;
- any torchvision classification model by name (``torchvision:resnet18``), with a local state
  dict (``.pt``/``.pth`` read weights-only, or ``.safetensors``); torchvision's own ImageNet
  weight files load as they are;
- a timm model by name (``timm:resnet18``; the optional extra ``timm``) with a local checkpoint;
- a user's own architecture as a TorchScript (``torchscript``) or ``torch.export``
  (``exported-program``) file, used as a frozen black box: logits only.

Kinds are a registry (``TEACHER_KINDS``, the entry-point group ``reskd.teachers``) of
:class:`TeacherKind`: each says whether it gives feature maps (what feature distillation needs)
and how its networks are made: built by architecture name (``build`` and ``check``), or read from
a file as a black box (``load``). The built-ins below register as a plug-in does, through the
project's ``pyproject.toml``. A third party adds a kind in one file, one object and one entry
point::

    # reskd_onnx.py
    from distill.teachers import TeacherKind

    def load(path: str) -> torch.nn.Module:
        ...  # a module whose forward gives logits (N, classes)

    ONNX = TeacherKind("onnx", "an ONNX file (black box)", features=False, load=load)

    # its pyproject.toml
    [project.entry-points."reskd.teachers"]
    onnx = "reskd_onnx:ONNX"

The entry point's name is the kind's. A checkpoint is checked against its network when it
arrives: keys and shapes (one line: how many differ, the first few) and classes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import ConfigError
from space.registry import Registry, RegistryError, UnknownName
from space.zoo import create_model


class CheckpointError(ValueError):
    """A checkpoint that does not fit its network; the message is one line."""


@dataclass(frozen=True)
class TeacherKind:
    """One kind of teacher. ``build(arch, num_classes)`` makes the untrained network of an
    architecture family (a teacher named ``kind:arch``) after ``check(arch)`` (a ValueError
    naming the known ones); ``load(path)`` reads a program file (a teacher named ``kind``) as the
    network itself, given logits only; a kind with neither is the zoo's, built by ``NetSpec``.
    ``features``: it exposes ``forward_stages`` (feature-level methods can use it). ``order``
    places it in listings: lower first, then by name."""

    name: str
    description: str
    features: bool
    build: Callable[[str, int], nn.Module] | None = None
    check: Callable[[str], None] | None = None
    load: Callable[[str], nn.Module] | None = None
    order: int = 100

    def model(self, arch: str) -> str:
        """``NetSpec``'s model name of the architecture ``arch`` of this kind."""
        return f"{self.name}:{arch}" if self.build is not None else arch


@cache
def torchvision_names() -> list[str]:
    """torchvision's classification models by name."""
    from torchvision import models

    return sorted(models.list_models(module=models))


def _check_torchvision(arch: str) -> None:
    known = torchvision_names()
    if arch not in known:
        raise ValueError(
            f"unknown torchvision classification model {arch!r}; e.g. {', '.join(known[:6])}, "
            f"... ({len(known)} in all: torchvision.models.list_models())"
        )


def _torchvision(arch: str, num_classes: int) -> nn.Module:
    from torchvision import models

    return models.get_model(arch, weights=None, num_classes=num_classes)


def _timm_module() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError("needs the optional extra timm: pip install 'reskd[timm]'") from None
    return timm


def _check_timm(arch: str) -> None:
    if not _timm_module().is_model(arch):
        raise ValueError(f"unknown timm model {arch!r} (timm.list_models() lists them)")


def _timm(arch: str, num_classes: int) -> nn.Module:
    return _timm_module().create_model(arch, pretrained=False, num_classes=num_classes)


def _torchscript(path: str) -> nn.Module:
    import warnings

    with warnings.catch_warnings():  # TorchScript is deprecated upstream; users have it
        warnings.simplefilter("ignore", FutureWarning)
        module: nn.Module = torch.jit.load(path, map_location="cpu")
    return module


def _exported_program(path: str) -> nn.Module:
    return torch.export.load(path).module()


def _check(name: str, kind: TeacherKind) -> None:
    if not isinstance(kind, TeacherKind):
        raise RegistryError(f"teacher kind {name!r}: a TeacherKind, not {type(kind).__name__}")
    if kind.name != name:
        raise RegistryError(f"teacher kind {name!r}: it is named {kind.name!r}")
    if (kind.build is None) != (kind.check is None):
        raise RegistryError(f"teacher kind {name!r}: build and check go together")


TEACHER_KINDS: Registry[TeacherKind] = Registry(
    "teacher kind", "reskd.teachers", check=_check, order=lambda k: (k.order, k.name)
)

# The built-in kinds: entry points of this project (pyproject.toml), as a plug-in's are.
ZOO = TeacherKind("zoo", "a network of the zoo or a given genotype's", True, order=0)
TORCHVISION = TeacherKind(
    "torchvision",
    "a torchvision classification model by name",
    False,
    _torchvision,
    _check_torchvision,
    order=10,
)
TIMM = TeacherKind("timm", "a timm model by name (extra timm)", False, _timm, _check_timm, order=20)
TORCHSCRIPT = TeacherKind(
    "torchscript", "a TorchScript file (black box)", False, load=_torchscript, order=30
)
EXPORTED_PROGRAM = TeacherKind(
    "exported-program", "a torch.export program file, .pt2 (black box)", False,
    load=_exported_program, order=40,
)  # fmt: skip


def teacher_kind(name: str) -> TeacherKind:
    try:
        return TEACHER_KINDS.get(name)
    except UnknownName:
        raise ConfigError.at(
            ("teacher",), f"unknown teacher kind {name!r}; known: {', '.join(TEACHER_KINDS)}"
        ) from None


def external(family: str, arch: str, num_classes: int) -> nn.Module:
    """An untrained torchvision or timm network (``NetSpec`` of model ``family:arch``); an
    unknown name is a ValueError listing where the known ones are."""
    kind = teacher_kind(family)
    if kind.build is None or kind.check is None:
        raise ConfigError.at(("teacher",), f"{family} networks are not built as {family}:NAME")
    kind.check(arch)
    return kind.build(arch, num_classes)


def known_arch(family: str) -> Callable[[str], str]:
    """A pydantic validator: an architecture name ``family`` knows, else a ValueError."""

    def check(arch: str) -> str:
        kind = teacher_kind(family)
        if kind.check is not None:
            kind.check(arch)
        return arch

    return check


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    """sha256 of a file (hex): a teacher's identity beside its architecture."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True`` (plain,
    or under ``state_dict``, ``model`` or ``state_dict_ema``); ``module.`` prefixes of
    DataParallel checkpoints are dropped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"not a safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: torch raises several kinds
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"not a state dict torch loads weights-only ({first})") from None
        if isinstance(state, Mapping):
            for key in ("state_dict", "model", "state_dict_ema"):
                if isinstance(state.get(key), Mapping):
                    state = state[key]
                    break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError("not a state dict (tensor names to tensors, or {state_dict: ...})")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _shape(t: Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def fit_problems(net: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """One line saying how ``state`` differs from ``net``'s (None: it fits)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {_shape(state[k])} vs {_shape(v)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' * (len(missing) > 3)})"
        )
    if unexpected:
        more = ", ..." * (len(unexpected) > 3)
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{more})")
    if shapes:
        parts.append(
            f"{len(shapes)} of another shape ({'; '.join(shapes[:2])}{'; ...' * (len(shapes) > 2)})"
        )
    return f"{len(missing) + len(unexpected) + len(shapes)} keys differ: " + ", ".join(parts)


def classifier_classes(net: nn.Module, state: Mapping[str, Tensor]) -> int | None:
    """The class count ``state`` holds for ``net``'s last linear layer (None: not found)."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    weight = state.get(f"{last}.weight") if last is not None else None
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def fitted(
    net: nn.Module,
    state: Mapping[str, Tensor],
    *,
    label: str,
    num_classes: int | None = None,
    dataset: str = "the dataset",
) -> dict[str, Tensor]:
    """``state`` as ``net`` loads it (a torchvision ResNet's keys renamed for a zoo ResNet), or a
    :class:`CheckpointError` in one line: the classifier's classes against ``num_classes``, then
    keys and shapes."""
    from space.catalog import TORCHVISION_ARCHS
    from space.zoo import Backbone, torchvision_keys

    hint = ""
    if isinstance(net, Backbone) and "layer1.0.conv1.weight" in state:  # torchvision's names
        state = torchvision_keys(state)
        if label in TORCHVISION_ARCHS:
            hint = f" (a torchvision file: use teacher: {{torchvision: {label}}})"
    classes = classifier_classes(net, state)
    if num_classes is not None and classes is not None and classes != num_classes:
        raise CheckpointError(
            f"its classifier has {classes} classes; {dataset} has {num_classes}{hint}"
        )
    problems = fit_problems(net, state)
    if problems is not None:
        raise CheckpointError(f"does not fit {label}: {problems}{hint}")
    return dict(state)


def check_program(
    path: str | Path,
    kind: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    dataset: str = "the dataset",
) -> None:
    """A :class:`CheckpointError` unless the program at ``path`` takes any batch of
    ``input_shape`` inputs and gives ``num_classes`` logits."""
    got = program_classes(path, kind, input_shape)
    if got != num_classes:
        raise CheckpointError(
            f"the {kind} program gives {got} classes; {dataset} has {num_classes}"
        )


def load_program(path: str | Path, kind: str) -> nn.Module:
    """A program file of the teacher kind ``kind`` (a TorchScript or ``torch.export`` file) as a
    frozen module (a black box: logits only)."""
    load = teacher_kind(kind).load
    if load is None:
        raise CheckpointError(f"{kind} teachers are networks by name, not program files")
    try:
        module = load(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a {kind} file ({first[:200]})") from None
    return BlackBox(module, kind)


class BlackBox(nn.Module):
    """A frozen program: ``forward`` gives logits; it has no parameters to train or stages to
    read, and stays in evaluation mode."""

    def __init__(self, program: nn.Module, kind: str) -> None:
        super().__init__()
        self.program = program
        self.kind = kind
        for p in program.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> BlackBox:
        del mode  # frozen: always in evaluation mode
        self.training = False
        with suppress(NotImplementedError, RuntimeError):  # exported programs refuse mode changes
            self.program.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        out = self.program(x)
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise CheckpointError(
                f"teacher_checkpoint: the {self.kind} program must return logits (N, classes), "
                f"got {type(out).__name__}"
                + (f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else "")
            )
        return out


@cache
def _program_classes(path: str, mtime: float, kind: str, shape: tuple[int, ...]) -> int:
    del mtime  # part of the cache key
    program = load_program(path, kind)
    with torch.no_grad():
        classes = int(program(torch.zeros(2, *shape)).shape[1])
        try:
            program(torch.zeros(3, *shape))
        except Exception:
            raise CheckpointError(
                f"the {kind} program must take any batch size (it fails on 3 samples where 2 "
                "pass; torch.export.export(..., dynamic_shapes=...) with a torch.export.Dim for "
                "the batch)"
            ) from None
    return classes


def program_classes(path: str | Path, kind: str, input_shape: tuple[int, ...]) -> int:
    """The classes a program's logits have on inputs of ``input_shape``."""
    p = Path(path)
    try:
        return _program_classes(str(p), p.stat().st_mtime, kind, tuple(input_shape))
    except CheckpointError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"the {kind} program fails on inputs of shape (2, {', '.join(map(str, input_shape))}): "
            f"{first[:200]}"
        ) from None


def parse_teacher(text: str) -> tuple[str, str | None]:
    """``resnet20`` (the zoo), ``torchvision:resnet18``, ``timm:resnet18``, ``torchscript`` or
    ``exported-program`` as (kind, architecture)."""
    family, sep, arch = text.partition(":")
    if sep:
        by_name = [k.name for k in TEACHER_KINDS.values() if k.build is not None]
        if family not in by_name or not arch:
            raise CheckpointError(
                f"teacher: {text!r} is not {' or '.join(f'{k}:NAME' for k in by_name)}; "
                f"known kinds: {', '.join(TEACHER_KINDS)}"
            )
        return family, arch
    if text in TEACHER_KINDS and TEACHER_KINDS[text].load is not None:
        return text, None
    return ZOO.name, text


def check_teacher_file(
    path: str | Path, teacher: str, *, num_classes: int | None, input_shape: tuple[int, ...]
) -> str:
    """Check an uploaded teacher file against the architecture ``teacher`` names (and the
    dataset's ``num_classes`` when known); a :class:`CheckpointError` (one line) when it does not
    fit, else what was checked."""
    kind, arch = parse_teacher(teacher)
    if arch is None:  # a program
        if num_classes is None:  # the input it takes is known with the data
            load_program(path, kind)
            return f"a {kind} program"
        check_program(path, kind, input_shape=input_shape, num_classes=num_classes)
        return f"a {kind} program giving {num_classes} classes"
    state = read_state_dict(path)
    model = teacher_kind(kind).model(arch)

    def build(classes: int) -> nn.Module:
        if teacher_kind(kind).build is not None:
            return external(kind, arch, classes)
        return create_model(arch, num_classes=classes, in_chans=input_shape[0],
                            input_size=input_shape[-1])  # fmt: skip

    try:
        net = build(num_classes or 1000)
        if num_classes is None:  # the file's own class count, when it has a classifier
            net = build(classifier_classes(net, state) or 1000)
    except ValueError as exc:  # an unknown name (ConfigError is a ValueError)
        raise CheckpointError(f"teacher: {str(exc).removeprefix('model: ')}") from None
    fitted(net, state, label=model, num_classes=num_classes)
    return f"a state dict that fits {model} ({classifier_classes(net, state)} classes)"
