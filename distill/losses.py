"""Knowledge-distillation losses as loss modules.

``KDLoss`` is eq. 3 of the ResKD paper::

    L_KD(S, y, T) = tau * t^2 * L_{T-S}(softmax(S / t), softmax(T / t)) + (1 - tau) * CE(S, y)

with L_{T-S} either ``l2`` (the paper's default: the squared Euclidean distance between the two
softened distributions, summed over classes, averaged over the batch) or ``kl``
(KL(softmax(T/t) || softmax(S/t)), summed over classes, averaged over the batch).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Literal["l2", "kl"]
DISTANCES: tuple[Distance, ...] = ("l2", "kl")


def soft_distance(student: Tensor, teacher: Tensor, *, distance: Distance, t: float) -> Tensor:
    """L_{T-S} between softmax(student / t) and softmax(teacher / t), averaged over the batch."""
    if distance == "l2":
        diff = F.softmax(student / t, dim=1) - F.softmax(teacher / t, dim=1)
        return diff.pow(2).sum(dim=1).mean()
    if distance == "kl":
        return F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    raise ValueError(f"distance: must be one of {', '.join(DISTANCES)}, got {distance!r}")


class Objective(nn.Module):
    """A KD method's loss on a batch: the student's and teacher's outputs the method compares,
    the labels, and the logits the cross-entropy term applies to when they are not the student's
    (a residual stage compares R_i with T - S_{i-1} but may apply cross-entropy to S_i)."""

    def forward(
        self, student: Tensor, teacher: Tensor, target: Tensor, ce_logits: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError


class KDLoss(Objective):
    """Eq. 3: ``tau`` weighs the teacher term against cross-entropy, ``t`` is the temperature."""

    def __init__(self, *, distance: Distance = "l2", tau: float = 0.9, t: float = 4.0) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance: must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if not 0 <= tau <= 1:
            raise ValueError(f"tau: must be in [0, 1], got {tau}")
        if not t > 0:
            raise ValueError(f"t: the temperature must be > 0, got {t}")
        self.distance: Distance = distance
        self.tau = tau
        self.t = t

    def forward(
        self, student: Tensor, teacher: Tensor, target: Tensor, ce_logits: Tensor | None = None
    ) -> Tensor:
        soft = soft_distance(student, teacher, distance=self.distance, t=self.t)
        hard = F.cross_entropy(student if ce_logits is None else ce_logits, target)
        return self.tau * self.t**2 * soft + (1 - self.tau) * hard

    def extra_repr(self) -> str:
        return f"distance={self.distance}, tau={self.tau}, t={self.t}"


def energy(logits: Tensor) -> Tensor:
    """Eq. 8: per-sample Energy ``||softmax(logits)||_2^2`` (1 for a one-hot, 1/C when uniform)."""
    return F.softmax(logits, dim=1).pow(2).sum(dim=1)


def mutual_kl(student: Tensor, peer: Tensor) -> Tensor:
    """Deep mutual learning's term for ``student``: KL(softmax(peer) || softmax(student)),
    with the peer's prediction as a fixed target (each network of the cohort gets its own)."""
    return F.kl_div(
        F.log_softmax(student, dim=1),
        F.log_softmax(peer.detach(), dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _pairwise_distances(e: Tensor) -> Tensor:
    return torch.cdist(e, e, p=2)


def relational_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Park et al.'s distance-wise loss: Huber loss between mean-normalised pairwise distances."""

    def normalised(e: Tensor) -> Tensor:
        d = _pairwise_distances(e)
        positive = d[d > 0]
        return d / (positive.mean() if positive.numel() else d.new_tensor(1.0))

    with torch.no_grad():
        t = normalised(teacher)
    return F.smooth_l1_loss(normalised(student), t)


def relational_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """Park et al.'s angle-wise loss: Huber loss between cosines of all triplet angles."""

    def cosines(e: Tensor) -> Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = e_i - e_j
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()

    with torch.no_grad():
        t = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), t)


class RelationalObjective(Objective):
    """Relational KD (Park et al.; never "RKD" here): ``(1 - tau) * CE + w_d * distance +
    w_a * angle`` on the output embeddings (the paper's weights 25 and 50 by default)."""

    def __init__(
        self, *, tau: float = 0.9, distance_weight: float = 25.0, angle_weight: float = 50.0
    ) -> None:
        super().__init__()
        self.tau, self.distance_weight, self.angle_weight = tau, distance_weight, angle_weight

    def forward(
        self, student: Tensor, teacher: Tensor, target: Tensor, ce_logits: Tensor | None = None
    ) -> Tensor:
        ce = F.cross_entropy(student if ce_logits is None else ce_logits, target)
        return (
            (1 - self.tau) * ce
            + self.distance_weight * relational_distance(student, teacher)
            + self.angle_weight * relational_angle(student, teacher)
        )
