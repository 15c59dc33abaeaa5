"""``reskd run CONFIG --dry-run``: check a config against its data and price it, training nothing.

It loads the dataset from its root (so a missing or malformed root fails here, with the field),
checks one training sample has the shape the networks are built for, builds every network the
run would train (teacher, S0, res-students, searched supernets, baselines) and counts its
parameters and MFLOPs, then times a few training steps of each on the device the run would use
and extrapolates to the whole schedule: an estimate of device hours per stage, not a promise
(data loading, evaluation and checkpoints are left out; per-sample time is taken at
``timing_batch`` samples per step, which on a GPU overestimates the time of larger batches).

A searched res-student is priced as its two things: the search (the supernets its strategy plans,
``Strategy.plan``: STACNAS's stage 1 supernet at its depth, stage 2 at the derived depth; DARTS one
supernet of all eight operations; bilevel steps count twice) and the fine-tuning of a network at
the budget (timed on DARTS_V2's cells at the search's shape, scaled by budget / its MFLOPs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from distill.config import ConfigError
from distill.data import DatasetError, DatasetInfo, load_dataset, num_samples
from distill.models import NetSpec, complexity
from distill.report import format_table
from distill.train import TrainConfig, resolve_device
from search.config import RunConfig, SearchedNet, spec_of
from search.run import shape_for
from search.strategies import strategy_for
from space.genotypes import DARTS_V2
from space.numbers import mflops, number


@dataclass
class Priced:
    stage: str
    network: str
    mparams: float | None
    mflops: float | None
    epochs: int
    images: int  # training images per epoch
    seconds_per_image: float

    @property
    def hours(self) -> float:
        return self.seconds_per_image * self.images * self.epochs / 3600

    def row(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "network": self.network,
            "M params": mflops(self.mparams),
            "MFLOPs": mflops(self.mflops),
            "epochs": self.epochs,
            "images/epoch": self.images,
            "ms/image": number(1000 * self.seconds_per_image),
            "hours": number(self.hours),
        }


def time_per_image(
    model: nn.Module,
    info: DatasetInfo,
    *,
    device: torch.device,
    batch: int,
    steps: int = 2,
    warmup: bool = True,
) -> float:
    """Seconds per training image: forward, cross-entropy, backward and an SGD step on random
    inputs of the data's shape, after one untimed warm-up step (``warmup``)."""
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, *info.input_shape, device=device)
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        nn.functional.cross_entropy(logits, y).backward()
        optimizer.step()

    if warmup:
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.cpu()
    return (time.perf_counter() - started) / (steps * batch)


@dataclass
class _Pricer:
    """Times networks on the device the run would use (``timing``: steps and warm-up)."""

    info: DatasetInfo
    device: torch.device
    images: int  # training images per epoch
    timing_batch: int | None
    timing: dict[str, Any]

    def batch(self, cfg_batch: int) -> int:
        if self.timing_batch is not None:
            return max(2, min(self.timing_batch, cfg_batch))  # BatchNorm needs 2 samples
        return cfg_batch if self.device.type == "cuda" else min(cfg_batch, 8)

    def seconds(self, model: nn.Module, batch: int) -> float:
        return time_per_image(
            model, self.info, device=self.device, batch=self.batch(batch), **self.timing
        )

    def net(self, stage: str, spec: NetSpec, epochs: int, batch: int) -> Priced:
        model = spec.build()
        cost = complexity(model, self.info)
        seconds = self.seconds(model, batch)
        return Priced(stage, spec.label, cost.params / 1e6, cost.mflops, epochs, self.images,
                      seconds)  # fmt: skip

    def searched(self, name: str, net: SearchedNet, finetune_epochs: int) -> list[Priced]:
        """A search, priced as the supernets its strategy plans, then the fine-tuning of a
        network at the budget (DARTS_V2's cells at the search's shape, scaled by budget / its
        MFLOPs)."""
        spec = net.search
        shape = shape_for(spec, self.info)
        out = []
        for stage in strategy_for(spec).plan(spec, shape):
            supernet = stage.build(shape)
            params = sum(p.numel() for p in supernet.parameters())  # its MFLOPs are no network's
            seconds = stage.passes * self.seconds(supernet, spec.batch_size)
            out.append(Priced(f"{name} search {stage.stage}",
                              f"supernet C{stage.channels}L{stage.layers}", params / 1e6, None,
                              stage.epochs, self.images, seconds))  # fmt: skip
        reference = NetSpec.of_genotype(
            DARTS_V2, self.info, channels=shape.channels, layers=spec.layers
        )
        model = reference.build()
        scale = spec.budget_mflops / complexity(model, self.info).mflops
        seconds = self.seconds(model, spec.batch_size) * scale
        out.append(Priced(f"{name} fine-tune", f"searched (<= {mflops(spec.budget_mflops)} MFLOPs)",
                          None, spec.budget_mflops, finetune_epochs, self.images,
                          seconds))  # fmt: skip
        return out


def dry_run(
    config: RunConfig,
    *,
    timing_batch: int | None = None,
    steps: int = 2,
    warmup: bool = True,
    log: Callable[[str], None] = print,
) -> list[Priced]:
    """Validate ``config`` against its data and price every stage; prints the plan."""
    device = resolve_device(config.device)
    info, train_images = _checked_data(config)
    images = max(1, train_images - config.val_size)  # D_v is drawn from the training set
    timing = {"steps": steps, "warmup": warmup}
    pricer = _Pricer(info, device, images, timing_batch, timing)
    plan, loaded_s0 = _networks(config, pricer)
    plan += _baselines(config, plan, loaded_s0, images)
    what = "GPU" if device.type == "cuda" else device.type.upper()
    log(
        f"dry run of {config.method} on {config.dataset} ({'x'.join(map(str, info.input_shape))}, "
        f"{info.num_classes} "
        f"classes, {train_images} training images, D_v {config.val_size}); timed on {device}, "
        f"{steps} steps per network; nothing is trained"
    )
    log(format_table([p.row() for p in plan], list(plan[0].row())))
    if any(
        getattr(n, "model", None) in ("genotype", "searched")
        for n in (config.student, *config.res_students)
    ):
        log(f"NAS networks train with {_protocol(config.train_config(nas=True))}")
    total = sum(p.hours for p in plan)
    teacher = "loaded" if config.teacher_checkpoint else "trained"
    if config.student_checkpoint:
        teacher += ", S0 loaded"
    log(
        f"estimated {what} hours: {total:.2f} (training steps only, the teacher {teacher}; "
        "Energy may stop the res-students earlier)"
    )
    for deviation in config.deviations():
        log(f"note: {deviation}")
    return plan


def _protocol(config: TrainConfig) -> str:
    """A training protocol in a line: optimizer, schedule, weight decay, batch, epochs, clip."""
    schedule = {
        "multistep": f"/{1 / config.gamma:g} at epochs {', '.join(map(str, config.milestones))}",
        "cosine": "cosine",
        "cosine-power": f"cosine power annealing (power {config.power:g}) to {config.lr_min:g}",
        "constant": "constant",
    }[config.schedule]
    clip = f", gradients clipped at {config.grad_clip:g}" if config.grad_clip else ""
    return (
        f"{config.optimizer.upper()} lr {config.lr:g}, {schedule}, wd {config.weight_decay:g}, "
        f"batch {config.batch_size}, {config.epochs} epochs{clip}"
    )


def _checked_data(config: RunConfig) -> tuple[DatasetInfo, int]:
    """The dataset's description and training images, once its root loads and one training
    sample has the shape the networks are built for."""
    try:
        data = load_dataset(config.dataset, root=config.root, augment=config.augmented)
    except DatasetError as exc:
        field, _, msg = str(exc).partition(": ")
        raise ConfigError.at((field if field in ("root", "dataset") else "root",), msg) from None
    info = data.info
    x, _ = data.train[0]
    if tuple(x.shape) != info.input_shape:
        raise ConfigError.at(
            ("root",), f"a training image has shape {tuple(x.shape)}, not {info.input_shape}"
        )
    return info, num_samples(data.train)


def _networks(config: RunConfig, pricer: _Pricer) -> tuple[list[Priced], Priced | None]:
    """The teacher, S0 (or the assistant method's pair) and the res-students, priced; and S0's
    network when it is loaded (it costs nothing, but the baselines train it)."""
    info, images = pricer.info, pricer.images
    student_cfg, teacher_cfg = config.train_config(), config.train_config(teacher=True)
    nas_cfg = config.train_config(nas=True)
    plan: list[Priced] = []
    teacher_spec = spec_of(config.teacher, info)  # type: ignore[arg-type]
    if config.teacher_checkpoint is None:
        plan.append(pricer.net("teacher", teacher_spec, teacher_cfg.epochs,
                               teacher_cfg.batch_size))  # fmt: skip
    else:
        cost = complexity(teacher_spec.build(), info)
        plan.append(Priced("teacher (loaded)", teacher_spec.label, cost.params / 1e6,
                           cost.mflops, 0, images, 0.0))  # fmt: skip
    s0 = config.student
    loaded_s0: Priced | None = None
    if isinstance(s0, SearchedNet):
        plan += pricer.searched("S0", s0, nas_cfg.epochs)
    else:
        s0_cfg = nas_cfg if s0.model == "genotype" else student_cfg
        stage = "student (S + A)" if config.method == "assistant" else "S0"
        plan.append(pricer.net(stage, spec_of(s0, info), s0_cfg.epochs, s0_cfg.batch_size))
        if config.student_checkpoint is not None:
            loaded_s0 = plan[-1]
            plan[-1] = replace(loaded_s0, stage="S0 (loaded)", epochs=0)
    if config.method == "assistant":
        plan.append(replace(plan[-1], stage="assistant A (S frozen)"))
    for i in range(1, config.stages + 1):
        net = config.res_student(i)
        if isinstance(net, SearchedNet):
            plan += pricer.searched(f"R{i}", net, nas_cfg.epochs)
        else:
            cfg = nas_cfg if net.model == "genotype" else student_cfg
            plan.append(pricer.net(f"R{i}", spec_of(net, info), cfg.epochs, cfg.batch_size))
    return plan, loaded_s0


def _baselines(
    config: RunConfig, plan: list[Priced], loaded_s0: Priced | None, images: int
) -> list[Priced]:
    """The Table II baselines, made of the networks already priced (ensemble / together: S0's
    and R1's; feature_kd: S)."""
    trained = {
        p.stage.split()[0]: p
        for p in plan
        if p.stage in ("S0", "R1", "student (S + A)", "R1 fine-tune", "S0 fine-tune")
    }
    if loaded_s0 is not None:
        trained["S0"] = loaded_s0
    out = []
    for kind in config.baselines:
        members = [trained[k] for k in ("S0", "R1", "student") if k in trained][:2]
        out.append(
            Priced(
                f"baseline {kind}", " + ".join(m.network for m in members), None,
                sum(m.mflops or 0 for m in members), members[0].epochs, images,
                sum(m.seconds_per_image for m in members),
            )
        )  # fmt: skip
    return out
