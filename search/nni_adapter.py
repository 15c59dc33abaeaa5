"""The optional NNI backend (``pip install .[nni]``): the ONLY module of the product that imports
``nni``. NNI 3.0 is archived upstream and pins old packages (filelock < 3.12: its experiments hang
with a newer one, typeguard), so it lives in its own environment (``make nni-venv``).

- :func:`search` runs NNI 3.0's DARTS one-shot strategy (first-order bilevel, NNI's own training
  loop on pytorch-lightning) on NNI's DARTS model space shaped like ours (same cells, nodes,
  channels, cells count, reduction positions, stem) with the same objective as our strategies: the
  KD loss of eq. 6 against the residual target. NNI's DARTS has no FLOPs term of ours (its penalty
  works with NNI's own profiler, not the product's counter), so the budget is enforced at
  derivation exactly as for our strategies, from NNI's exported probabilities.
- :func:`to_nni_arch` / :func:`from_nni_arch` convert genotypes to and from NNI's DARTS model-space
  format (``{"normal/op_2_0": "sep_conv_3x3", "normal/input_2_0": [0], ...}``), which
  ``nni.nas.hub.pytorch.DARTS(...).freeze(arch)`` accepts.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from search.budget import NON_ZERO
from search.strategies.base import SearchContext, StrategyResult
from space.genotypes import Genotype
from space.supernet import CELL_KINDS, NetShape, argmax_genotype, edge_inputs

try:
    import nni
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Lightning
    from nni.nas.evaluator.pytorch import LightningModule as NniLightningModule
    from nni.nas.experiment import NasExperiment
    from nni.nas.hub.pytorch import DARTS as NniDartsSpace
    from nni.nas.nn.pytorch import MutableConv2d, MutableLinear
    from nni.nas.strategy import DARTS as NniDartsStrategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "strategy nni-darts needs NNI 3.0: pip install '.[nni]' in its own environment "
        "(make nni-venv); it pins filelock<3.12, which NNI's experiments need"
    ) from exc


# ------------------------------------------------------------------------------------------------
# Genotype <-> NNI's DARTS architecture dict
# ------------------------------------------------------------------------------------------------


def to_nni_arch(genotype: Genotype) -> dict[str, Any]:
    """Our genotype in NNI's DARTS model-space format (nodes numbered from 2, two slots each)."""
    arch: dict[str, Any] = {}
    for kind in CELL_KINDS:
        edges = genotype.normal if kind == "normal" else genotype.reduce
        for k, (op, inp) in enumerate(edges):
            node, slot = 2 + k // 2, k % 2
            arch[f"{kind}/op_{node}_{slot}"] = op
            arch[f"{kind}/input_{node}_{slot}"] = [inp]
    return arch


def from_nni_arch(arch: dict[str, Any]) -> Genotype:
    cells = {}
    for kind in CELL_KINDS:
        edges = []
        node = 2
        while f"{kind}/op_{node}_0" in arch:
            for slot in (0, 1):
                inputs = arch[f"{kind}/input_{node}_{slot}"]
                edges.append((arch[f"{kind}/op_{node}_{slot}"], int(inputs[0])))
            node += 1
        cells[kind] = edges
    return Genotype.of(cells["normal"], cells["reduce"])


# ------------------------------------------------------------------------------------------------
# NNI's DARTS space shaped like ours
# ------------------------------------------------------------------------------------------------


def nni_space(shape: NetShape) -> nn.Module:
    """NNI's DARTS model space with our channels, cells and stem; the stem's input channels and
    the classifier follow the dataset (NNI fixes 3 channels and 10 or 1000 classes)."""
    space = NniDartsSpace(width=shape.channels, num_cells=shape.layers, dataset=shape.stem)
    if shape.stem == "cifar":
        first = space.stem[0]
        space.stem[0] = MutableConv2d(shape.in_chans, first.out_channels, 3, padding=1, bias=False)
    else:
        first = space.stem0[0]
        space.stem0[0] = MutableConv2d(
            shape.in_chans, first.out_channels, 3, stride=2, padding=1, bias=False
        )
    space.classifier = MutableLinear(space.classifier.in_features, shape.num_classes)
    return space


class _GlobalIndexed(Dataset[tuple[Tensor, int, int]]):
    """Samples of a subset with their index in the whole training set (the cache's index)."""

    def __init__(self, subset: Subset[tuple[Tensor, int]]) -> None:
        self.subset = subset

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x, y = self.subset[i]
        return x, y, int(self.subset.indices[i])


class _ResidualKD(NniLightningModule):
    """Eq. 6 as NNI's training module: NNI's DARTS calls ``training_step`` for both its
    architecture step (held-out batch) and its weight step (training batch)."""

    def __init__(self, ctx: SearchContext) -> None:
        super().__init__()
        self._ctx = [ctx]  # not a submodule
        self._objective: list[Any] = []
        self.step_seconds: list[float] = []

    def _task(self) -> Any:
        if not self._objective:
            self._objective.append(self._ctx[0].objective(self.model, None))
            self._objective[0].frozen.to(self.device)
        return self._objective[0]

    def training_step(self, batch: Any, _batch_idx: int) -> Tensor:
        x, y, index = batch
        loss, _ = self._task().loss(x, y, index.cpu())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, _batch_idx: int) -> Tensor:
        x, y, index = batch
        loss, _ = self._task().loss(x, y, index.cpu())
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        spec = self._ctx[0].spec
        optimizer = torch.optim.SGD(
            self.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class StepTimer(pl.Callback):
    """Seconds of each training step (NNI's step = an architecture and a weight step)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds.append(time.perf_counter() - self._t)


def experiment(
    ctx: SearchContext,
    *,
    max_batches: int | None = None,
    timer: StepTimer | None = None,
) -> tuple[NasExperiment, Any]:
    """NNI's DARTS one-shot experiment on our objective; returns it and its one-shot module."""
    spec = ctx.spec
    n = len(ctx.train_data)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed)).tolist()
    cut = max(1, min(n - 1, round(n * (1 - spec.held_out))))
    train = _GlobalIndexed(Subset(ctx.train_data, order[:cut]))
    held = _GlobalIndexed(Subset(ctx.train_data, order[cut:]))
    loaders = nni.trace(torch.utils.data.DataLoader)
    accelerator = "gpu" if ctx.device.startswith("cuda") else "cpu"
    trainer = nni.trace(pl.Trainer)(
        max_epochs=spec.epochs,
        accelerator=accelerator,
        devices=1,
        limit_train_batches=max_batches if max_batches is not None else 1.0,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_progress_bar=ctx.progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        callbacks=[timer] if timer is not None else [],
    )
    evaluator = Lightning(
        _ResidualKD(ctx),
        trainer,
        train_dataloaders=loaders(train, batch_size=spec.batch_size, shuffle=True),
        val_dataloaders=loaders(held, batch_size=spec.batch_size, shuffle=True),
    )
    torch.manual_seed(spec.seed)
    strategy = NniDartsStrategy(arc_learning_rate=spec.arch_lr, gradient_clip_val=spec.grad_clip)
    exp = NasExperiment(nni_space(ctx.shape), evaluator, strategy)
    exp.config.experiment_working_directory = str(ctx.checkpoint_dir / "nni-experiments")
    return exp, strategy


def probabilities(exported: dict[str, Any], steps: int = 4) -> dict[str, list[dict[str, float]]]:
    """NNI's exported probabilities (``"normal/<node>_<input>": {op: p}``, nodes from 2, over the
    seven non-zero operations; NNI's cell keeps the zero operation implicit) as ours, with
    ``none`` = 1 - the rest."""
    out: dict[str, list[dict[str, float]]] = {}
    for kind in CELL_KINDS:
        edges = []
        for node, inp in edge_inputs(steps):
            key = f"{kind}/{node + 2}_{inp}"
            if key not in exported:
                raise KeyError(f"NNI exported no probabilities for {key}; got {sorted(exported)}")
            ops = {str(op): float(p) for op, p in exported[key].items()}
            edges.append({"none": max(0.0, 1.0 - sum(ops.values())), **ops})
        out[kind] = edges
    return out


def search(ctx: SearchContext) -> StrategyResult:
    started = time.perf_counter()
    exp, strategy = experiment(ctx)
    try:
        exp.run()
    finally:
        exp.stop()  # not left to NNI's atexit hook
    exported = strategy.oneshot_module.export_probs()
    probs = probabilities(exported, ctx.shape.steps)
    scores = {
        kind: [{op: e.get(op, 0.0) for op in NON_ZERO} for e in probs[kind]] for kind in CELL_KINDS
    }
    genotype = argmax_genotype(probs, ctx.shape.steps)
    record = {
        "epoch": ctx.spec.epochs,
        "loss": float("nan"),
        "expected_mflops": float("nan"),
        "probabilities": probs,
        "genotype": genotype.to_dict(),
        "stage": "nni-darts",
        "nni_export": {k: {str(c): float(p) for c, p in v.items()} for k, v in exported.items()},
    }
    return StrategyResult(genotype, scores, [record], [time.perf_counter() - started])
