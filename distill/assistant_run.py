"""Gao et al.'s method as stored stages: separate ``student`` into S and A (model separation keeps
the total MFLOPs), train S on the teacher's feature maps, then A on the residual (the variant's
phases), and report S, S + A and, when asked, the baselines of their Table 1 on the unseparated
student: ``feature_kd`` (eq. 3 alone, "Baseline w/o A") and ``plain_student`` (labels alone, no
KD, their "Student")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

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
from distill.report import Report, Row
from distill.residual import stage_seed
from distill.train import Supervised, TrainConfig
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
                **(
                    {"adapter_levels": phase.adapter_levels}
                    if phase.adapter_levels not in (None, phase.levels)
                    else {}
                ),
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
            task = AssistantDistillation.for_phase(
                model, self.teacher, adapters, phase, at_weight=self.at_weight, at_mode=self.at_mode
            )
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
    for kind in p.config.baselines:
        rows.append(_BASELINES[kind](phases))
    report = Report(
        rows, p.stages, None, assisted, False,  # the teacher's feature maps: per batch
        p.split.to_dict() | {"indices": "in validation_split.json"},
        extra={"separation": split.to_dict()}, deviations=p.config.deviations(),
    )  # fmt: skip
    report.write(p.out_dir)
    p.log("\n" + report.table())
    return report


def _feature_kd(phases: _Phases) -> Row:
    """Table 1's "Baseline w/o A": the unseparated student with eq. 3 on the final map and the same
    classifier training; feature KD even when the run adds attention transfer, as its name says."""
    p, student = phases.p, phases.student
    torch.manual_seed(stage_seed(p.config.seed, "feature_kd"))
    plain = AssistedStudent(student.build_backbone(), None)
    replace(phases, at_weight=0.0).train("feature_kd", plain, lambda: None)
    return p.model_row("feature KD (unseparated)", "baseline", student.label, plain.student)


def _plain_student(phases: _Phases) -> Row:
    """Table 1's "Student": the unseparated student trained on labels alone (cross-entropy, no
    teacher), with the schedule of S and A."""
    p, student = phases.p, phases.student
    torch.manual_seed(stage_seed(p.config.seed, "plain_student"))
    net = student.build()
    payload = {"net": student.to_dict(), "train": phases.train_cfg.to_dict(), **p.data_key}
    result = p.store.train(
        "plain_student", payload, {"model": net}, task=Supervised(net), train_data=p.data.train,
        config=phases.train_cfg, desc="plain student", progress=p.progress,
    )  # fmt: skip
    p.stages.append(result.summary())
    return p.model_row("student, no KD (unseparated)", "baseline", student.label, net)


_BASELINES: dict[str, Callable[[_Phases], Row]] = {
    "feature_kd": _feature_kd,
    "plain_student": _plain_student,
}
