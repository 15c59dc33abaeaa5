"""The residual method of ResKD (Li et al.): the residual task (S0 and every R_i in one class)
under any KD method (``distill.methods``), and the quantities of Algorithm 1 (residual targets,
Energy, the termination rule, distances to the teacher). The pipeline that runs these as stages
is ``search.pipeline``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.losses import Objective, energy, mutual_kl
from distill.methods import MethodConfig as MethodConfig  # the base of every method's settings
from distill.train import TrainTask

AUX_WEIGHT = 0.4


# ------------------------------------------------------------------------------------------------
# The residual task: S0 (no base) and every R_i (base = S_{i-1}), in one class
# ------------------------------------------------------------------------------------------------


class ResidualDistillation(TrainTask):
    """Train ``model`` so that ``base + model`` follows the teacher (base = 0 for S0).

    Teacher and base logits come either from a per-sample cache (no random augmentation: each
    sample's frozen outputs never change, so they are computed once) or from the frozen networks
    on each augmented batch under ``no_grad``. ``method`` says where the objective applies (its
    ``residual_target`` and ``ce_on``). With ``peer`` (a method that ``needs_peer``, deep mutual
    learning) a second copy trains alongside, each also matching the other's prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        objective: Objective,
        method: MethodConfig,
        teacher: nn.Module | None = None,
        base: nn.Module | None = None,
        cache: tuple[Tensor, Tensor | None] | None = None,
        peer: nn.Module | None = None,
    ) -> None:
        trained = {"model": model} | ({"peer": peer} if peer is not None else {})
        frozen = {k: v for k, v in (("teacher", teacher), ("base", base)) if v is not None}
        super().__init__(trained=trained, frozen=frozen)
        if cache is None and teacher is None:
            raise ValueError("either a teacher network or cached teacher logits is needed")
        self.objective = objective
        self.method = method
        self.cache = cache

    def _frozen_logits(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.cache is not None:
            t, b = self.cache
            return t[index].to(x.device), (b[index].to(x.device) if b is not None else None)
        with torch.no_grad():
            t = self.frozen["teacher"](x)
            b = self.frozen["base"](x) if "base" in self.frozen else None
        return t, b

    def _terms(self, r: Tensor, t: Tensor, b: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        s = r if b is None else b + r
        if b is None or self.method.residual_target == "combined":
            student, teacher = s, t
        else:
            student, teacher = r, t - b  # eq. 3 against T_i = T - S_{i-1}
        ce = s if self.method.ce_on == "combined" else r
        return self.objective(student, teacher, y, ce), s

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        t, b = self._frozen_logits(x, index)
        r = self.trained["model"](x)
        loss, s = self._terms(r, t, b, y)
        aux = getattr(self.trained["model"], "aux_logits", None)
        if aux is not None:  # a genotype network's auxiliary head (DARTS weighs it 0.4)
            loss = loss + AUX_WEIGHT * self._terms(aux, t, b, y)[0]
        if "peer" in self.trained:
            peer_loss, s_peer = self._terms(self.trained["peer"](x), t, b, y)
            loss = loss + peer_loss + mutual_kl(s, s_peer) + mutual_kl(s_peer, s)
        return loss, s

    def predict(self, x: Tensor) -> Tensor:
        r: Tensor = self.trained["model"](x)
        if "base" in self.frozen:
            return self.frozen["base"](x) + r
        return r


# ------------------------------------------------------------------------------------------------
# Residual targets, Energy, distances (the quantities of Algorithm 1 and of the report)
# ------------------------------------------------------------------------------------------------


def zero_output(model: nn.Module) -> None:
    """Zero a res-student's classifier, so S_i = S_{i-1} + R_i starts exactly at S_{i-1} and its
    training moves S_i only as far as the residual objective asks (a randomly initialised R_i
    would first add noise to a good S_{i-1})."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError("zero_init_residual: the res-student has no linear classifier 'fc'")
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)


def stage_seed(seed: int, stage: str) -> int:
    """A stage's own seed for weight initialisation, independent of what ran before it (a
    reused teacher must not change S0's initial weights)."""
    return int(hashlib.sha256(f"{seed}:{stage}".encode()).hexdigest()[:8], 16)


def residual_target(teacher: Tensor, student: Tensor) -> Tensor:
    """T_i = T - S_{i-1} (eq. 4): what R_i learns."""
    return teacher - student


def dataset_energy(logits: Tensor) -> float:
    """Eq. 9: the mean per-sample Energy over a dataset's logits."""
    return float(energy(logits).mean())


def should_stop(student_energy: float, teacher_energy: float, ratio: float | None) -> bool:
    """Algorithm 1's termination: Energy(S_i, D_v) > ratio * Energy(T, D_v); never with ratio
    None (termination off: every stage asked for trains)."""
    return ratio is not None and student_energy > ratio * teacher_energy


def gi_per_sample(student: Tensor, teacher: Tensor) -> Tensor:
    """Eq. 21's GI over C_1 for each sample: ||R_i - (T - S_{i-1})||_2 = ||S_i - T||_2 on logits
    (the norm of eq. 20's gradient, over 2)."""
    return (student - teacher).norm(dim=1)


def l2_to_teacher(student: Tensor, teacher: Tensor) -> float:
    """Mean over samples of ||S(x) - T(x)||_2 on logits."""
    return float(gi_per_sample(student, teacher).mean())


def predicted(outputs: Tensor) -> Tensor:
    """The predicted classes of logits (N x C), or ``outputs`` when they are classes already."""
    return outputs.argmax(dim=1) if outputs.dim() == 2 else outputs


def fixed_by_residuals(stages: Sequence[Tensor], labels: Tensor) -> Tensor:
    """The samples of Table VIII's GI reading (section V of ResKD): those S0 predicts wrongly and
    some ResKD student predicts correctly. ``stages`` are S0 then ResKD students (S_i = S0 + R_1
    + ... + R_i, i >= 1), as logits or predicted classes: one run's S1, ..., S_n, or (the
    paper's reading) every S_i of several runs on one test set. The mask is empty when there are
    no ResKD students."""
    s0_wrong = predicted(stages[0]) != labels
    fixed = torch.zeros_like(s0_wrong)
    for s in stages[1:]:
        fixed |= predicted(s) == labels
    return s0_wrong & fixed


def gi_over_c1_to_teacher(gi: Tensor, mask: Tensor) -> float | None:
    """Table VIII's "GI/C1 to T": the mean of the per-sample GI/C1 (``gi_per_sample``) over the
    samples of ``mask`` (``fixed_by_residuals``), where the res-students' work shows; None when
    no sample is in it."""
    if not bool(mask.any()):
        return None
    return float(gi[mask].mean())
