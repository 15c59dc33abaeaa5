"""The ResKD student S_n = S0 + R_1 + ... + R_n with sample-adaptive inference (Algorithm 2).

A sample stops adding res-students as soon as the Energy of its current logits (eq. 8) is above
``TH_energy``: within a batch, R_{i+1} runs only on the samples whose Energy is still at or below
the threshold, so the skipped work is really skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.losses import energy
from distill.models import NetSpec
from distill.train import loader

FORMAT = "reskd-combined/1"


@dataclass
class AdaptiveResult:
    logits: Tensor  # (N, C)
    used: Tensor  # (N,) number of res-students each sample used (0 = S0 alone)


class LogitSum(nn.Module):
    """Logits of several networks summed (S_i for training, ensembles, 'trained together')."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.nets[0](x)
        for net in self.nets[1:]:
            out = out + net(x)
        return out


class CombinedStudent(nn.Module):
    """S0, res-students R_1..R_n and TH_energy; ``forward`` is Algorithm 2."""

    def __init__(
        self,
        s0: nn.Module,
        residuals: list[nn.Module],
        *,
        threshold: float = math.inf,
        specs: list[NetSpec] | None = None,
        mflops: list[float] | None = None,
        thresholds: list[float] | None = None,
        deploy_stage: int | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.s0 = s0
        self.residuals = nn.ModuleList(residuals)
        self.threshold = float(threshold)
        self.specs = specs
        self.mflops = mflops  # per network: S0, R_1, ..., R_n
        # TH_energy of every S_i (eq. 10 with S_i for S_n): what a student cut at S_i calibrates
        # to, and the stage that was best on D_v (what an export ships unless told otherwise)
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else None
        self.deploy_stage = deploy_stage
        self.preprocessing = preprocessing  # distill.data.Preprocessing.to_dict()

    @property
    def num_stages(self) -> int:
        return len(self.residuals)

    def truncated(self, stages: int) -> CombinedStudent:
        """S_``stages`` = S0 + R_1..R_stages, calibrated with its own TH_energy."""
        if not 0 <= stages <= self.num_stages:
            raise ValueError(f"stages: must be in 0..{self.num_stages}, got {stages}")
        if stages == self.num_stages:
            return self
        if self.thresholds is None:
            raise ValueError("stages: this student file holds no per-stage thresholds")
        return CombinedStudent(
            self.s0,
            list(self.residuals[:stages]),
            threshold=self.thresholds[stages],
            specs=self.specs[: stages + 1] if self.specs is not None else None,
            mflops=self.mflops[: stages + 1] if self.mflops is not None else None,
            thresholds=self.thresholds[: stages + 1],
            deploy_stage=stages,
            preprocessing=self.preprocessing,
        ).eval()

    @torch.no_grad()
    def adaptive(self, x: Tensor, *, threshold: float | None = None) -> AdaptiveResult:
        th = self.threshold if threshold is None else threshold
        logits = self.s0(x)
        used = torch.zeros(len(x), dtype=torch.long, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for residual in self.residuals:
            # Algorithm 2: continue while TH >= E_i, E_i the Energy of the sample's current S_i.
            active = active[energy(logits[active]) <= th]
            if active.numel() == 0:
                break
            logits = logits.index_add(0, active, residual(x[active]))
            used[active] += 1
        return AdaptiveResult(logits, used)

    def forward(self, x: Tensor) -> Tensor:
        return self.adaptive(x).logits

    def full(self, x: Tensor) -> Tensor:
        """S_n on every sample (no skipping)."""
        out: Tensor = self.s0(x)
        for residual in self.residuals:
            out = out + residual(x)
        return out

    def expected_mflops(self, used: Tensor) -> float:
        """Mean MFLOPs per sample given how many res-students each sample used."""
        if self.mflops is None:
            raise ValueError("mflops: this combined student was built without per-network MFLOPs")
        cumulative = torch.tensor(self.mflops, dtype=torch.float64).cumsum(0)
        return float(cumulative[used.cpu()].mean())

    # ---------------------------------------------------------------- one file, weights_only
    def save(self, path: Path) -> None:
        if self.specs is None:
            raise ValueError("specs: only a combined student built from NetSpecs can be saved")
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "format": FORMAT,
            "threshold": self.threshold,
            "specs": [s.to_dict() for s in self.specs],
            "mflops": self.mflops,
            "thresholds": self.thresholds,
            "deploy_stage": self.deploy_stage,
            "preprocessing": self.preprocessing,
            "state_dict": self.state_dict(),
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: Path, *, map_location: str | torch.device = "cpu") -> CombinedStudent:
        """Load a file written by :meth:`save` (plain data and tensors: ``weights_only=True``)."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a combined student file (format {FORMAT})")
        specs = [NetSpec(**s) for s in payload["specs"]]
        model = cls(
            specs[0].build(),
            [s.build() for s in specs[1:]],
            threshold=payload["threshold"],
            specs=specs,
            mflops=payload["mflops"],
            thresholds=payload.get("thresholds"),
            deploy_stage=payload.get("deploy_stage"),
            preprocessing=payload.get("preprocessing"),
        )
        model.load_state_dict(payload["state_dict"])
        return model.eval()


@dataclass
class AdaptiveEvaluation:
    accuracy: float
    expected_mflops: float
    stage_histogram: list[int]  # how many samples stopped after 0, 1, ..., n res-students
    logits: Tensor
    used: Tensor


@torch.no_grad()
def evaluate_adaptive(
    model: CombinedStudent,
    data: Dataset[tuple[Tensor, int]],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    threshold: float | None = None,
) -> AdaptiveEvaluation:
    model.eval().to(device)
    logits, used, labels = [], [], []
    for x, y in loader(data, batch_size=batch_size):
        result = model.adaptive(x.to(device), threshold=threshold)
        logits.append(result.logits.cpu())
        used.append(result.used.cpu())
        labels.append(y)
    all_logits, all_used = torch.cat(logits), torch.cat(used)
    accuracy = float((all_logits.argmax(1) == torch.cat(labels)).float().mean())
    histogram = torch.bincount(all_used, minlength=model.num_stages + 1).tolist()
    return AdaptiveEvaluation(
        accuracy, model.expected_mflops(all_used), histogram, all_logits, all_used
    )
