"""The search objective as a task of the one training loop: eq. 6 of the ResKD paper (the KD loss of
the candidate res-student against its stage's residual target, ``distill.residual``) plus a
differentiable FLOPs term, minimised over the supernet's weights and architecture parameters.

``one-level`` (STACNAS): weights and architecture parameters step on the same batch.
``bilevel`` (DARTS, first order): the architecture steps on a held-out batch, then the weights on a
training batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from distill.distributed import local
from distill.residual import ResidualDistillation
from distill.train import EpochRecord, TrainTask
from space.genotypes import Genotype
from space.supernet import Supernet

Optimization = Literal["one-level", "bilevel"]


def beta_decay(supernet: Supernet) -> Tensor:
    """beta-DARTS's Beta-Decay regularisation (Ye et al. 2022): the mean over edges of the
    log-sum-exp of the architecture parameters (present candidates only). Its gradient is each
    edge's softmax, so it pulls down the parameters of the operations that already dominate and
    keeps the weights from saturating early, while their differences still decide."""
    total, edges = None, 0
    for kind, alphas in supernet.alphas.items():
        lse = torch.logsumexp(alphas + getattr(supernet, f"mask_{kind}"), dim=-1)
        total = lse.sum() if total is None else total + lse.sum()
        edges += lse.numel()
    assert total is not None
    return total / edges


def smoothed_weights(
    supernet: Supernet, epsilon: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """SDARTS-RS's random smoothing (Chen and Hsieh 2020): each edge's softmax weights plus noise
    drawn uniformly from [-epsilon, epsilon], clipped to [0, 1] and renormalised (masked candidates
    stay at 0; sigmoid weights, which need not sum to 1, are clipped only). The noise is a
    constant, so gradients still reach the architecture parameters through the weights; the
    network weights learn to serve a neighbourhood of the architecture, not one point of it, which
    flattens the loss around the argmax that derivation keeps."""
    out = {}
    for kind, weights in supernet.weights().items():
        present = (getattr(supernet, f"mask_{kind}") == 0).to(weights.dtype)
        noise = torch.rand(weights.shape, generator=generator, dtype=weights.dtype)
        noise = noise.to(weights.device).mul_(2 * epsilon).sub_(epsilon)
        noisy = (weights + noise * present).clamp(0, 1) * present
        if supernet.weighting == "sigmoid":
            out[kind] = noisy
            continue
        total = noisy.sum(dim=-1, keepdim=True)
        noisy = torch.where(total > 0, noisy / total.clamp_min(1e-12), weights)
        out[kind] = noisy
    return out


GUMBEL_TAU = (10.0, 0.1)  # GDAS's temperature, annealed linearly over the search


def gumbel_weights(supernet: Supernet, tau: float, generator: torch.Generator) -> dict[str, Tensor]:
    """GDAS's sampled architecture (Dong and Yang 2019): per edge one operation drawn from the
    softmax of its architecture parameters by the Gumbel-max trick, as a one-hot weight in value
    with the gradient of the tempered softmax ``softmax((log p + g) / tau)`` (straight-through).
    The forward pass computes one discrete network (the sampled operation alone on each edge, as
    derivation will keep one), so the supernet cannot lean on a mixture of operations that no
    derived network contains; every candidate's output still reaches the architecture gradient,
    which is the first-order effect of putting it on the edge of that network. One draw per edge
    and batch; masked candidates are never drawn."""
    out = {}
    for kind, probs in supernet.weights().items():
        logits = probs.clamp_min(1e-30).log() + getattr(supernet, f"mask_{kind}")
        uniform = torch.rand(probs.shape, generator=generator, dtype=probs.dtype)
        gumbel = -(-uniform.clamp_min(1e-20).log()).log()
        soft = torch.softmax((logits + gumbel.to(probs.device)) / tau, dim=-1)
        hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        out[kind] = hard - soft.detach() + soft
    return out


def zero_one_loss(supernet: Supernet) -> Tensor:
    """FairDARTS's zero-one loss (Chu et al. 2020): minus the mean squared distance of each present
    candidate's sigmoid weight from 0.5. Minimising it pushes every weight towards 0 or 1, so that
    what derivation keeps (weights near 1) and drops (near 0) is what the supernet computed with,
    rather than a mixture whose argmax reads a few hundredths' difference."""
    total, count = None, 0
    for kind, weights in supernet.weights().items():
        present = getattr(supernet, f"mask_{kind}") == 0
        term = (weights[present] - 0.5).square().sum()
        total = term if total is None else total + term
        count += int(present.sum())
    assert total is not None
    return -total / count


def cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Endless passes over ``batches`` (a loader reshuffles on each)."""
    while True:
        yield from batches


@contextmanager
def frozen(parameters: list[nn.Parameter]) -> Iterator[None]:
    """The parameters need no gradient inside (the architecture step of bilevel optimisation:
    only the architecture's is taken). ``torch.autograd.grad`` prunes built-in operations'
    weight gradients by itself, but a custom autograd function sees only ``requires_grad``
    (``ctx.needs_input_grad``): without this, the fused cells' depthwise weight gradients
    (``space.kernels.Depthwise5x5``) were computed and dropped, 0.2 of the 2.7 s architecture
    pass at the default search benchmark's shape. The architecture's gradient is the same."""
    before = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, needed in zip(parameters, before, strict=True):
            p.requires_grad_(needed)


def flops_penalty(
    expected_mflops: Tensor, budget_mflops: float, weight: float, floor: float = 0.0
) -> Tensor:
    """``weight * (max(0, E/budget - 1) + max(0, floor - E/budget))`` for E = E[MFLOPs]: no pull
    while the expected derived network uses between ``floor`` and all of the budget (accuracy
    alone decides), a pull proportional to the overshoot beyond it or the shortfall below the
    floor. The floor asks the search for what the derivation's repair would otherwise impose
    (a network using at least ``search.budget.FILL`` of the budget), so that the search, not the
    repair, chooses how the budget is spent."""
    use = expected_mflops / budget_mflops
    return weight * (torch.relu(use - 1.0) + torch.relu(floor - use))


@dataclass(frozen=True)
class SearchSettings:
    """What the search objective and its architecture steps are set to: the FLOPs term
    (``budget_mflops``, ``flops_weight``, ``budget_floor``: :func:`flops_penalty`), the
    architecture's Adam (``arch_lr``, ``arch_weight_decay``) and ``optimization``, the weights'
    ``grad_clip``, ``warmup_epochs`` of weights only, the regularisers (``beta_decay``,
    ``random_smoothing``, ``zero_one``, ``aux_skip``, each 0 for off) and the ``seed`` of their
    noise."""

    budget_mflops: float
    flops_weight: float
    arch_lr: float
    arch_weight_decay: float
    optimization: Optimization
    budget_floor: float = 0.0
    grad_clip: float = 5.0
    warmup_epochs: int = 0
    beta_decay: float = 0.0
    random_smoothing: float = 0.0
    zero_one: float = 0.0
    aux_skip: float = 0.0
    seed: int = 0


class SearchTask(TrainTask):
    """``objective`` is the residual KD task with the supernet as its trained network (its frozen
    teacher and base, or their cached logits, give T - S_{i-1}); ``held_out`` is the same on the
    held-out half for bilevel optimisation, ``held_out_batches`` its batches (images, labels,
    dataset indices), passed over again and again.

    Under several ranks (``distill.distributed``) the architecture's gradients are reduced as the
    weights' are, each rank stepping on its share of the held-out batch: the architecture
    parameters stay the same on every rank. The fused cells reshape their maps as contiguous
    tensors, so the supernet stays in the default layout on CUDA devices (``channels_last``)."""

    channels_last = False

    def __init__(
        self,
        supernet: Supernet,
        *,
        objective: ResidualDistillation,
        settings: SearchSettings,
        held_out: ResidualDistillation | None = None,
        held_out_batches: Iterable[tuple[Tensor, Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__(trained={"model": supernet}, frozen=dict(objective.frozen.items()))
        if settings.optimization == "bilevel" and (held_out is None or held_out_batches is None):
            raise ValueError("optimization: bilevel needs a held-out split")
        self.supernet = supernet
        self.objective = objective
        self.held_out = held_out
        self.held_out_batches = held_out_batches
        self._held: Iterator[tuple[Tensor, Tensor, Tensor]] | None = None  # made when first used
        self.settings = settings
        self.budget = settings.budget_mflops
        self.flops_weight = settings.flops_weight
        self.budget_floor = settings.budget_floor
        self.optimization = settings.optimization
        self.weight_clip = settings.grad_clip
        self.warmup_epochs = settings.warmup_epochs
        self.arch_active = settings.warmup_epochs == 0
        self.beta_decay = settings.beta_decay
        self.beta_weight = 0.0  # this epoch's, ramped linearly from 0 (start_epoch)
        self.random_smoothing = settings.random_smoothing
        self.zero_one = settings.zero_one
        self.aux_skip = settings.aux_skip
        self.epsilon = 0.0  # this epoch's, ramped linearly (start_epoch)
        self.noise = torch.Generator().manual_seed(settings.seed)
        self.gumbel = supernet.weighting == "gumbel"
        self.tau = GUMBEL_TAU[0]  # this epoch's (start_epoch)
        self.arch_optimizer = torch.optim.Adam(
            supernet.arch_parameters(),
            lr=settings.arch_lr,
            betas=(0.5, 0.999),
            weight_decay=settings.arch_weight_decay,
        )
        self.history: list[dict[str, Any]] = []
        self._expected = float(supernet.expected_mflops().detach())

    def optimized_parameters(self) -> list[nn.Parameter]:
        return self.supernet.weight_parameters()

    def _loss(self, task: ResidualDistillation, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        loss, logits = task.loss(x, y, index)
        expected = self.supernet.expected_mflops()
        self._expected = float(expected.detach())
        self._logits = logits
        loss = loss + flops_penalty(expected, self.budget, self.flops_weight, self.budget_floor)
        if self.beta_weight:
            loss = loss + self.beta_weight * beta_decay(self.supernet)
        if self.zero_one:
            loss = loss + self.zero_one * zero_one_loss(self.supernet)
        return loss

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        loss = self._loss(self.objective, x, y, index)
        return loss, self._logits

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the ranks of ``distill.distributed`` receive the task so): without the
        held-out batches' running pass and the last batch's logits."""
        return self.__dict__ | {"_held": None, "_logits": None}

    def _held_out_batch(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, float]:
        """The next held-out batch: this rank's share of it on ``device``, and the share."""
        assert self.held_out_batches is not None
        if self._held is None:
            self._held = cycle(self.held_out_batches)
        xv, yv, iv = next(self._held)
        n = len(yv)
        xv, yv, iv = local(xv), local(yv), local(iv)
        return xv.to(device), yv.to(device), iv, len(yv) / n

    def _arch_step(self, x: Tensor) -> None:
        """Bilevel: the architecture's step on a held-out batch, the weights frozen."""
        assert self.held_out is not None
        arch = self.supernet.arch_parameters()
        xv, yv, iv, share = self._held_out_batch(x.device)
        self.arch_optimizer.zero_grad(set_to_none=True)
        with frozen(self.supernet.weight_parameters()), self._sampled():
            with self.amp.autocast():
                held_loss = self._loss(self.held_out, xv, yv, iv)
            grads = torch.autograd.grad(self.amp.scale(held_loss), arch)
        for p, g in zip(arch, grads, strict=True):
            p.grad = g
        self.share, weights_share = share, self.share
        self.synchronize(arch)
        self.share = weights_share
        self.amp.unscale(self.arch_optimizer)
        self.amp.step(self.arch_optimizer)

    def step(
        self, x: Tensor, y: Tensor, index: Tensor, optimizer: torch.optim.Optimizer
    ) -> tuple[Tensor, Tensor]:
        arch = self.supernet.arch_parameters()
        if self.optimization == "bilevel" and self.arch_active:
            self._arch_step(x)
        one_level = self.optimization == "one-level" and self.arch_active
        for p in arch:  # no gradient for the architecture unless this step updates it
            p.requires_grad_(one_level)
        try:
            with self.amp.autocast():
                if self.epsilon > 0:  # SDARTS-RS: the weights step at a perturbed architecture
                    smoothed = smoothed_weights(self.supernet, self.epsilon, self.noise)
                    with self.supernet.using(smoothed):
                        loss, logits = self.loss(x, y, index)
                else:
                    with self._sampled():
                        loss, logits = self.loss(x, y, index)
            if torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                self.arch_optimizer.zero_grad(set_to_none=True)
                self.amp.backward(loss)
                weights = self.supernet.weight_parameters()
                self.synchronize(weights + (arch if one_level else []))
                self.amp.unscale(optimizer)
                nn.utils.clip_grad_norm_(weights, self.weight_clip)
                self.amp.step(optimizer)
                if one_level:
                    self.amp.unscale(self.arch_optimizer)
                    self.amp.step(self.arch_optimizer)
        finally:
            for p in arch:
                p.requires_grad_(True)
        self.amp.update()
        return loss.detach(), logits.detach()

    @contextmanager
    def _sampled(self) -> Iterator[None]:
        """GDAS: the pass runs on one architecture drawn for it; otherwise on the weights."""
        if not self.gumbel:
            yield
            return
        with self.supernet.using(gumbel_weights(self.supernet, self.tau, self.noise)):
            yield

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Warm-up: the first ``warmup_epochs`` epochs train the weights only (parameter-free
        operations otherwise win early, while the convolutions are still untrained)."""
        super().start_epoch(epoch, epochs)
        self.arch_active = epoch >= self.warmup_epochs
        # beta-DARTS ramps its weight linearly over the search, from 0 at the first epoch
        self.beta_weight = self.beta_decay * epoch / max(1, epochs - 1)
        # SDARTS-RS ramps epsilon linearly from 0.03 (its paper's start) to the set value
        if self.random_smoothing:
            start = min(0.03, self.random_smoothing)
            self.epsilon = start + (self.random_smoothing - start) * epoch / max(1, epochs - 1)
        # GDAS anneals its temperature linearly from 10 to 0.1
        high, low = GUMBEL_TAU
        self.tau = high - (high - low) * epoch / max(1, epochs - 1)
        # DARTS-: the auxiliary skip's coefficient decays linearly to 0 at the last epoch, so
        # that the last epoch trains (and derivation reads) the supernet without it
        if self.aux_skip:
            self.supernet.aux_beta = self.aux_skip * (1 - epoch / max(1, epochs - 1))

    def predict(self, x: Tensor) -> Tensor:
        return self.objective.predict(x)

    def genotype(self) -> Genotype:
        return self.supernet.genotype()

    def status(self) -> dict[str, str]:
        return {"E[MFLOPs]": f"{self._expected:.3f}", "genotype": self.genotype().short()}

    def end_epoch(self, record: EpochRecord) -> None:
        self.history.append(
            {
                "epoch": record.epoch,
                "loss": record.loss,
                "expected_mflops": float(self.supernet.expected_mflops().detach()),
                "probabilities": self.supernet.probabilities(),
                "genotype": self.genotype().to_dict(),
            }
        )

    def epoch_metrics(self) -> dict[str, Any]:
        return {"expected_mflops": self.history[-1]["expected_mflops"]} if self.history else {}

    def extra_state(self) -> dict[str, Any]:
        return {"arch_optimizer": self.arch_optimizer.state_dict(), "history": self.history}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
            self.history = list(state["history"])
