"""Knowledge-distillation losses as loss modules.

``KDLoss`` is eq. 3 of the ResKD paper::

    L_KD(S, y, T) = tau * t^2 * L_{T-S}(softmax(S / t), softmax(T / t)) + (1 - tau) * CE(S, y)

with L_{T-S} either ``l2`` (the paper's default: the squared Euclidean distance between the two
softened distributions, summed over classes, averaged over the batch) or ``kl``
(KL(softmax(T/t) || softmax(S/t)), summed over classes, averaged over the batch).
"""

from __future__ import annotations

from typing import Literal

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


class KDLoss(nn.Module):
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

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        soft = soft_distance(student, teacher, distance=self.distance, t=self.t)
        hard = F.cross_entropy(student, target)
        return self.tau * self.t**2 * soft + (1 - self.tau) * hard

    def extra_repr(self) -> str:
        return f"distance={self.distance}, tau={self.tau}, t={self.t}"
