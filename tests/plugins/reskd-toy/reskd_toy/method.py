"""``toy-cosine``: KD by cosine distance between the student's and the teacher's logits,
``tau * (1 - cos(S, T)) * scale + (1 - tau) * CE``."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distill.losses import Objective
from distill.methods import MethodConfig


class CosineLoss(Objective):
    def __init__(self, *, tau: float, scale: float) -> None:
        super().__init__()
        self.tau, self.scale = tau, scale

    def forward(
        self, student: Tensor, teacher: Tensor, target: Tensor, ce_logits: Tensor | None = None
    ) -> Tensor:
        soft = (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
        hard = F.cross_entropy(student if ce_logits is None else ce_logits, target)
        return self.tau * self.scale * soft + (1 - self.tau) * hard


class CosineKD(MethodConfig):
    """Cosine distance between logits as the teacher term."""

    method: Literal["toy-cosine"] = "toy-cosine"
    scale: float = Field(4.0, gt=0, le=1000, description="the cosine term's weight")

    def objective(self) -> Objective:
        return CosineLoss(tau=self.tau, scale=self.scale)
