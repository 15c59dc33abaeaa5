"""Gao et al.'s method as stored stages: separate ``student`` into S and A (model separation keeps
the total MFLOPs), train S on the teacher's feature maps, then A on the residual (the variant's
phases), and report S, S + A and, when asked, feature KD on the unseparated student."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distill.assistant import (
    AssistantDistillation,
    AssistedStudent,
    AtMode,
    Separation,
    Variant,
    plan,
    save_assisted,
    separate,
)
from distill.assistant import (
    teacher_adapters as make_adapters,
)
from distill.models import NetSpec
from distill.prepare import Prepared
from distill.report import Report
from distill.residual import stage_seed
from distill.train import TrainConfig
from space.zoo import Backbone


@dataclass(frozen=True)
class _Phases:
    """What every phase of the method shares: the run, its separation and the AT settings."""

    p: Prepared
    teacher: Backbone
    student: NetSpec  # the unseparated network
    split: Separation
    at_weight: float
    at_mode: AtMode
    train_cfg: TrainConfig

    def train(self, name: str, model: AssistedStudent, after_student: Callable[[], None]) -> None:
        """Train ``model``'s phases as the stored stages ``{name}-{phase}``, in order; call
        ``after_student`` once S's phase is done."""
        p, split, train_cfg = self.p, self.split, self.train_cfg
        adapters = make_adapters(self.teacher, model.student)
        previous = p.t_key
        for phase in plan(model, adapters):
            payload = {
                "net": name,
                "phase": phase.name,
                "levels": phase.levels,
                "variant": model.variant,
                "student": (split.student if model.assistant else self.student).to_dict(),
                "assistant": split.assistant.to_dict() if model.assistant else None,
                "at_weight": self.at_weight,
                **({"at_mode": self.at_mode} if self.at_weight else {}),
                "train": train_cfg.to_dict(),
                "input": previous,
                "dataset": p.config.dataset,
                "augment": p.config.augmented,
            }
            task = AssistantDistillation(
                model, self.teacher, adapters, phase=phase.phase, levels=phase.levels,
                parts=phase.parts, at_weight=self.at_weight, at_mode=self.at_mode,
                at_levels=phase.at_levels,
            )  # fmt: skip
            result = p.store.train(
                f"{name}-{phase.name}", payload, {"model": model, "adapters": adapters},
                task=task, train_data=p.data.train, config=train_cfg,
                desc=f"{name} {phase.name}", progress=p.progress,
            )  # fmt: skip
            previous = result.key
            p.stages.append(result.summary())
            if phase.name == "student":
                after_student()
        model.eval()


def run_assistant(
    p: Prepared,
    *,
    student: NetSpec,
    variant: Variant,
    separation: float,
    at_weight: float,
    at_mode: AtMode = "instead",
) -> Report:
    """The method end to end; ``student`` is the network split into S and A."""
    teacher = p.teacher
    assert isinstance(teacher, Backbone)
    split = separate(student, ratio=separation, variant=variant)
    p.log(
        f"separation {separation:g}: S {split.student.label} {split.student_mflops:.3f} + "
        f"A {split.assistant.label} {split.assistant_mflops:.3f} = {split.total_mflops:.3f} "
        f"MFLOPs (original {student.label} {split.original_mflops:.3f}, "
        f"{100 * split.relative_error:+.2f}%)"
    )
    rows = [p.teacher_row()]
    phases = _Phases(p, teacher, student, split, at_weight, at_mode, p.config.train_config())
    torch.manual_seed(stage_seed(p.config.seed, "assistant"))
    assisted = AssistedStudent(
        split.student.build_backbone(), split.assistant.build_backbone(), variant=variant
    )

    def s_alone() -> None:
        rows.append(
            p.model_row("S (separated)", "separated", split.student.label, assisted.student)
        )

    phases.train("assistant", assisted, s_alone if variant != "progressive" else lambda: None)
    rows.append(
        p.model_row(
            f"S + A ({variant})", "assisted", f"{split.student.label}+{split.assistant.label}",
            assisted, student_mflops=split.student_mflops,
            assistant_mflops=split.assistant_mflops,
        )
    )  # fmt: skip
    save_assisted(assisted, split, p.out_dir / "assisted_student.pt")
    if "feature_kd" in p.config.baselines:
        torch.manual_seed(stage_seed(p.config.seed, "feature_kd"))
        plain = AssistedStudent(student.build_backbone(), None)
        phases.train("feature_kd", plain, lambda: None)
        rows.append(
            p.model_row("feature KD (unseparated)", "baseline", student.label, plain.student)
        )
    report = Report(
        rows, p.stages, None, assisted, False,  # the teacher's feature maps: per batch
        p.split.to_dict() | {"indices": "in validation_split.json"},
        extra={"separation": split.to_dict()}, deviations=p.config.deviations(),
    )  # fmt: skip
    report.write(p.out_dir)
    p.log("\n" + report.table())
    return report
