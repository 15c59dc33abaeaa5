"""Feature-residual assistant distillation (Gao et al., "Residual Knowledge Distillation"; called
``assistant`` here because "RKD" means relational KD elsewhere).

A student S mimics the teacher's feature maps (eq. 3); an assistant A then learns the residual
f_T - f_S (eq. 4: final map, ``plain``; block by block with the corrected map feeding S's next
block, ``progressive``; all K blocks at once, eq. 5, ``integrated``). S is frozen while A trains;
f_S + f_A feeds the classifier. Model separation (section 3.5) splits a given network into S and A
by a FLOPs ratio with per-stage channels from the square-root rule (refined until S and A hold
their shares), so S + A costs what the original did.

Choices where the paper is silent, all in S's channel space so that the summed map feeds S's own
blocks and classifier: a 1x1 conv maps A's maps to S's channels (zero-initialised, so A adds
nothing before it is trained); another maps S's (corrected) maps to the teacher's channels for
the distances (the identity on shared channels at first), and teacher maps are average-pooled
when their resolution is larger. S's phase fits that conv at every block A later learns from, on
S's detached maps where S itself learns only the final map (eq. 3), so that each residual of
eq. 5 is measured in the teacher's full channels. Classifiers are excluded from distillation, as
in the paper: S's classifier learns from labels only, on detached features, in every phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.models import NetSpec
from distill.train import TrainTask
from space.flops import count
from space.zoo import Backbone

Variant = Literal["plain", "progressive", "integrated"]
VARIANTS: tuple[Variant, ...] = ("plain", "progressive", "integrated")


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------


def match_resolution(teacher: Tensor, student: Tensor) -> Tensor:
    """The teacher's map average-pooled to the student's resolution (identity when equal)."""
    if teacher.shape[-2:] == student.shape[-2:]:
        return teacher
    h, w = student.shape[-2:]
    return F.adaptive_avg_pool2d(teacher, (h, w))


def feature_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Eq. 3/4: squared l2 distance between feature maps, averaged over samples and elements
    (the mean keeps the scale independent of the map's size)."""
    return (student - teacher).pow(2).mean()


def attention_map(f: Tensor) -> Tensor:
    """Zagoruyko & Komodakis: the l2-normalised spatial map of mean squared activations."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student: Tensor, teacher: Tensor) -> Tensor:
    t = attention_map(match_resolution(teacher, student))
    return (attention_map(student) - t).pow(2).mean()


# ------------------------------------------------------------------------------------------------
# The deployed network: S + A
# ------------------------------------------------------------------------------------------------


def conv1x1(cin: int, cout: int, *, zero: bool = False) -> nn.Conv2d:
    """A 1x1 conv between channel counts: zero (A's correction starts at nothing) or the identity
    on the channels both sides share, so an adapter between nearly equal widths starts as a
    pass-through instead of a random projection."""
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        if not zero:
            conv.weight[:, :, 0, 0].fill_diagonal_(1.0)
    return conv


@dataclass
class Levels:
    student: list[Tensor]  # S's map at each stage (before A's correction)
    assistant: list[Tensor]  # A's map at each stage, in S's channels
    features: Tensor  # the final corrected map f_S + f_A


class AssistedStudent(nn.Module):
    """S and A run side by side; ``progressive`` feeds each corrected map into S's next block,
    the other variants add A's final map to S's. S's classifier reads the sum. Without an
    assistant this is S alone (plain feature distillation, the baseline)."""

    def __init__(
        self, student: Backbone, assistant: Backbone | None, *, variant: Variant = "plain"
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if assistant is not None and student.stage_names != assistant.stage_names:
            raise ValueError("assistant: S and A must have the same stages")
        self.student = student
        self.assistant = assistant
        self.variant: Variant = variant
        adapters: dict[str, nn.Module] = {}
        if assistant is not None:
            for name in student.stage_names:
                adapters[name] = conv1x1(
                    assistant.stage_channels[name], student.stage_channels[name], zero=True
                )
        self.to_student = nn.ModuleDict(adapters)

    def forward_levels(self, x: Tensor) -> Levels:
        s = self.student.stem(x)
        a = self.assistant.stem(x) if self.assistant is not None else None
        s_maps: list[Tensor] = []
        a_maps: list[Tensor] = []
        for name in self.student.stage_names:
            s = self.student.stages[name](s)
            s_maps.append(s)
            if self.assistant is None:
                a_maps.append(torch.zeros_like(s))
                continue
            a = self.assistant.stages[name](a)
            a_in_s = self.to_student[name](a)
            a_maps.append(a_in_s)
            if self.variant == "progressive":
                s = s + a_in_s  # the residual-corrected map feeds S's next block
        features = s if self.variant == "progressive" else s_maps[-1] + a_maps[-1]
        return Levels(s_maps, a_maps, features)

    def forward_features(self, x: Tensor) -> Tensor:
        if self.assistant is None:
            return self.student.forward_features(x)
        if self.variant == "progressive":
            return self.forward_levels(x).features
        correction: Tensor = self.to_student[self.student.stage_names[-1]](
            self.assistant.forward_features(x)
        )
        return self.student.forward_features(x) + correction

    def forward_head(self, features: Tensor) -> Tensor:
        return self.student.forward_head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------------------
# Training: one task class, a phase at a time
# ------------------------------------------------------------------------------------------------

Phase = Literal["student", "assistant"]
AtMode = Literal["instead", "added"]


class AssistantDistillation(TrainTask):
    """One phase of the method: train S (eq. 3) or A on the residual (eq. 4/5), at ``levels``
    (indices of stages; the last stage for ``plain``, all for ``integrated``, one at a time for
    ``progressive``). ``parts`` names what this phase trains; everything else stays frozen.
    ``adapter_levels`` (S's phase): stages whose 1x1 conv to T's channels learns from S's detached
    map without S learning from it (default: ``levels``)."""

    def __init__(
        self,
        model: AssistedStudent,
        teacher: Backbone,
        adapters: nn.ModuleDict,
        *,
        phase: Phase,
        levels: list[int],
        parts: dict[str, nn.Module],
        at_weight: float = 0.0,
        at_mode: AtMode = "instead",
        at_levels: list[int] | None = None,
        adapter_levels: list[int] | None = None,
    ) -> None:
        frozen = {"teacher": teacher, "model": model, "adapters": adapters}
        super().__init__(trained=parts, frozen=frozen)
        self.phase: Phase = phase
        self.levels = levels
        self.at_weight = at_weight
        self.at_mode: AtMode = at_mode
        self.at_levels = at_levels if at_levels is not None else levels
        self.adapter_levels = adapter_levels if adapter_levels is not None else levels
        self.teacher_levels = _aligned(teacher, model.student)

    @classmethod
    def for_phase(
        cls,
        model: AssistedStudent,
        teacher: Backbone,
        adapters: nn.ModuleDict,
        phase: PhasePlan,
        *,
        at_weight: float = 0.0,
        at_mode: AtMode = "instead",
    ) -> AssistantDistillation:
        """The task of one planned phase (see :func:`plan`)."""
        return cls(
            model, teacher, adapters, phase=phase.phase, levels=phase.levels, parts=phase.parts,
            at_weight=at_weight, at_mode=at_mode, at_levels=phase.at_levels,
            adapter_levels=phase.adapter_levels,
        )  # fmt: skip

    def train(self, mode: bool = True) -> AssistantDistillation:
        super().train(mode)
        for part in self.trained.values():
            part.train(mode)  # trained parts live inside the frozen model too
        return self

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        model, adapters, teacher = (self.frozen[k] for k in ("model", "adapters", "teacher"))
        assert isinstance(model, AssistedStudent) and isinstance(adapters, nn.ModuleDict)
        assert isinstance(teacher, Backbone)
        with torch.no_grad():
            t_maps = list(teacher.forward_stages(x).values())
        levels = model.forward_levels(x)
        names = model.student.stage_names
        loss = x.new_zeros(())
        # RKD + AT (section 4.4): S mimics T's attention maps instead of its feature maps
        attention_only = self.at_weight > 0 and self.at_mode == "instead"
        for k in sorted({*self.levels, *self.adapter_levels}):
            s = levels.student[k]
            if self.phase == "assistant":
                s = s.detach() + levels.assistant[k]  # S frozen: A learns f_T - f_S
            t = match_resolution(t_maps[self.teacher_levels[k]], s)
            # S learns from its map at ``levels`` (eq. 3); elsewhere, and under AT instead, only
            # the adapter to T's channels learns, from S's detached map, so A's residual has it
            learns = self.phase == "assistant" or (k in self.levels and not attention_only)
            loss = loss + feature_distance(adapters[names[k]](s if learns else s.detach()), t)
            if self.at_weight and self.at_mode == "added" and k in self.levels:
                loss = loss + self.at_weight / 2 * attention_transfer(s, t)
        if self.phase == "student" and attention_only:
            for k in self.at_levels:  # every block's attention map, as AT does
                s = levels.student[k]
                t = match_resolution(t_maps[self.teacher_levels[k]], s)
                loss = loss + self.at_weight / 2 * attention_transfer(s, t)
        logits = model.forward_head(levels.features.detach())  # the classifier: labels only
        return loss + F.cross_entropy(logits, y), logits

    def predict(self, x: Tensor) -> Tensor:
        logits: Tensor = self.frozen["model"](x)
        return logits


def _aligned(teacher: Backbone, student: Backbone) -> list[int]:
    """Teacher stage for each student stage, aligned from the last one."""
    offset = len(teacher.stage_names) - len(student.stage_names)
    if offset < 0:
        raise ValueError("teacher: needs at least as many stages as the student")
    return [offset + k for k in range(len(student.stage_names))]


def teacher_adapters(teacher: Backbone, student: Backbone) -> nn.ModuleDict:
    """1x1 convs from S's channels to T's at each aligned stage (training only)."""
    t_channels = list(teacher.stage_channels.values())
    return nn.ModuleDict(
        {
            name: conv1x1(student.stage_channels[name], t_channels[t])
            if student.stage_channels[name] != t_channels[t]
            else nn.Identity()
            for name, t in zip(student.stage_names, _aligned(teacher, student), strict=True)
        }
    )


@dataclass
class PhasePlan:
    name: str
    phase: Phase
    levels: list[int]
    parts: dict[str, nn.Module]
    at_levels: list[int] | None = None  # S's attention maps (RKD + AT); default: ``levels``
    # stages whose adapter to T's channels learns on S's detached maps; default: ``levels``
    adapter_levels: list[int] | None = None


def plan(model: AssistedStudent, adapters: nn.ModuleDict) -> list[PhasePlan]:
    """The phases of a variant, in order (S before A; block by block when progressive)."""
    s, a, names = model.student, model.assistant, model.student.stage_names
    last = len(names) - 1
    if a is None:  # the baseline: S alone, eq. 3 on the final map
        return [PhasePlan("student", "student", [last], {"student": s, "adapters": adapters})]
    if model.variant != "progressive":
        # S is pre-trained end to end with eq. 3 (the final map) in both; A gets the final map
        # (eq. 4, plain) or every block's residual at once (eq. 5, integrated), measured through
        # the adapters to T's channels that S's phase fits at those blocks.
        a_levels = [last] if model.variant == "plain" else list(range(len(names)))
        return [
            PhasePlan(
                "student",
                "student",
                [last],
                {"student": s, "adapters": adapters},
                at_levels=list(range(len(names))),
                adapter_levels=a_levels,
            ),
            PhasePlan(
                "assistant",
                "assistant",
                a_levels,
                {"stem": a.stem, "stages": a.stages, "to_student": model.to_student, "fc": s.fc},
            ),
        ]
    phases = []
    for k, name in enumerate(names):
        s_parts: dict[str, nn.Module] = {
            "block": s.stages[name],
            "adapter": adapters[name],
            "fc": s.fc,
        }
        a_parts: dict[str, nn.Module] = {
            "block": a.stages[name],
            "to_student": model.to_student[name],
            "fc": s.fc,
        }
        if k == 0:
            s_parts["stem"], a_parts["stem"] = s.stem, a.stem
        phases += [
            PhasePlan(f"student-{name}", "student", [k], s_parts),
            PhasePlan(f"assistant-{name}", "assistant", [k], a_parts),
        ]
    return phases


# ------------------------------------------------------------------------------------------------
# Model separation (section 3.5)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Separation:
    original: NetSpec
    student: NetSpec
    assistant: NetSpec
    ratio: float
    original_mflops: float
    student_mflops: float  # S with its classifier
    assistant_mflops: float  # A's feature path and its 1x1 conv into S
    total_mflops: float  # the deployed S + A, counted as one network

    @property
    def relative_error(self) -> float:
        return self.total_mflops / self.original_mflops - 1

    def to_dict(self) -> dict[str, object]:
        return {
            "ratio": self.ratio,
            "student": self.student.label,
            "assistant": self.assistant.label,
            "original_mflops": self.original_mflops,
            "student_mflops": self.student_mflops,
            "assistant_mflops": self.assistant_mflops,
            "total_mflops": self.total_mflops,
            "relative_error": self.relative_error,
        }


def separate(
    original: NetSpec,
    *,
    ratio: float = 0.9,
    variant: Variant = "integrated",
    max_steps: int = 64,
) -> Separation:
    """Split ``original`` into S (``ratio`` of its MFLOPs) and A (the rest).

    Each stage's channels follow the square-root rule, c * sqrt(ratio) for S and
    c * sqrt(1 - ratio) for A, times one factor per network found by bisection: S alone to
    ``ratio`` of the original's MFLOPs, then A (its 1x1 conv into S included) to the rest. The
    rule alone leaves S short and A over its share (ResNet-18: 88.7% and 11.6%) because the stem,
    the classifier and A's conv into S cost linearly in the channels, not quadratically. Then
    channels move one at a time, in S and then in A, while that brings each nearer its share.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"separation: the student's share of FLOPs must be in (0, 1), got {ratio}")
    if variant not in VARIANTS:
        raise ValueError(f"variant: must be one of {', '.join(VARIANTS)}, got {variant!r}")
    shape = (original.in_chans, original.input_size, original.input_size)
    base = list(original.build_backbone().stage_channels.values())
    if original.model == "resnet50":
        base = [c // 4 for c in base]  # bottleneck planes
    target = count(original.build(), input_shape=shape).macs

    def spec(widths: tuple[int, ...]) -> NetSpec:
        return replace(original, width=1.0, stage_widths=widths)

    @lru_cache(maxsize=2)  # S while A's widths are fitted
    def net(widths: tuple[int, ...]) -> Backbone:
        return spec(widths).build_backbone()

    @cache
    def s_cost(sw: tuple[int, ...]) -> int:
        return count(net(sw), input_shape=shape).macs

    @cache
    def a_cost(sw: tuple[int, ...], aw: tuple[int, ...]) -> int:
        """A's feature path and its conv into S: the deployed S + A less S."""
        both = AssistedStudent(net(sw), net(aw), variant=variant)
        return count(both, input_shape=shape).macs - s_cost(sw)

    sw = _fitted(base, ratio, s_cost, ratio * target, max_steps)
    aw = _fitted(base, 1 - ratio, partial(a_cost, sw), (1 - ratio) * target, max_steps)
    s_macs, a_macs = s_cost(sw), a_cost(sw, aw)
    return Separation(
        original, spec(sw), spec(aw), ratio, target / 1e6, s_macs / 1e6, a_macs / 1e6,
        (s_macs + a_macs) / 1e6,
    )  # fmt: skip


def _fitted(
    base: list[int],
    share: float,
    cost: Callable[[tuple[int, ...]], int],
    goal: float,
    max_steps: int,
) -> tuple[int, ...]:
    """Widths ``c * sqrt(share) * m`` with the factor m (bisection) whose ``cost`` is nearest
    ``goal``, then moved one channel at a time while that brings the cost nearer."""

    def widths(m: float) -> tuple[int, ...]:
        return tuple(max(1, round(c * math.sqrt(share) * m)) for c in base)

    def miss(w: tuple[int, ...]) -> float:
        return abs(cost(w) - goal)

    low, high = 0.5, 1.5  # 10 halvings: under a channel's step for up to 1000 channels
    for _ in range(10):
        middle = (low + high) / 2
        low, high = (middle, high) if cost(widths(middle)) < goal else (low, middle)
    best = min(widths(low), widths(high), key=miss)
    for _ in range(max_steps):
        moves = [
            tuple(max(1, w + step) if i == k else w for i, w in enumerate(best))
            for k in range(len(base))
            for step in (-1, 1)
        ]
        move = min(moves, key=miss)
        if miss(move) >= miss(best):
            break
        best = move
    return best


ASSISTED_FORMAT = "reskd-assisted/1"


def save_assisted(model: AssistedStudent, separation: Separation, path: Path) -> None:
    """The deployable S + A in one file of plain data and tensors (``weights_only=True``)."""
    torch.save(
        {
            "format": ASSISTED_FORMAT,
            "variant": model.variant,
            "student": separation.student.to_dict(),
            "assistant": separation.assistant.to_dict(),
            "separation": separation.to_dict(),
            "state_dict": model.state_dict(),
        },
        path,
    )


def load_assisted(path: Path) -> AssistedStudent:
    """Load a file written by :func:`save_assisted`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != ASSISTED_FORMAT:
        raise ValueError(f"{path}: not an assisted student file (format {ASSISTED_FORMAT})")
    model = AssistedStudent(
        NetSpec(**payload["student"]).build_backbone(),
        NetSpec(**payload["assistant"]).build_backbone(),
        variant=payload["variant"],
    )
    model.load_state_dict(payload["state_dict"])
    return model.eval()
