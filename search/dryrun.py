"""``reskd run CONFIG --dry-run``: check a config against its data and price it, training nothing.

It loads the dataset from its root (so a missing or malformed root fails here, with the field),
checks one training sample has the shape the networks are built for, builds every network the
run would train (teacher, S0, res-students, searched supernets, baselines) and counts its
parameters and MFLOPs, then times a few training steps of each on the device the run would use
and extrapolates to the whole schedule: an estimate of device hours per stage, not a promise
(data loading, evaluation and checkpoints are left out; per-sample time is taken at
``timing_batch`` samples per step, which on a GPU overestimates the time of larger batches).

A searched res-student is priced as its two things: the search (STACNAS's stage 1 supernet at its
depth, stage 2 at the derived depth; DARTS one supernet of all eight operations; bilevel steps
count twice) and the fine-tuning of a network at the budget (timed on DARTS_V2's cells at the
search's shape, scaled by budget / its MFLOPs).
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
from distill.train import resolve_device
from search.config import RunConfig, SearchedNet, spec_of
from search.run import shape_for
from space.genotypes import DARTS_V2
from space.operations import PRIMITIVES
from space.supernet import Supernet, uniform_candidates


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
            "mparams": self.mparams,
            "mflops": self.mflops,
            "epochs": self.epochs,
            "images/epoch": self.images,
            "ms/image": 1000 * self.seconds_per_image,
            "hours": self.hours,
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
    try:
        data = load_dataset(config.dataset, root=config.root, augment=config.augmented)
    except DatasetError as exc:
        field, _, msg = str(exc).partition(": ")
        raise ConfigError.at((field if field in ("root", "dataset") else "root",), msg) from None
    info = data.info
    train_images = num_samples(data.train)
    x, _ = data.train[0]
    if tuple(x.shape) != info.input_shape:
        raise ConfigError.at(
            ("root",), f"a training image has shape {tuple(x.shape)}, not {info.input_shape}"
        )
    images = max(1, train_images - config.val_size)  # D_v is drawn from the training set
    timing = {"steps": steps, "warmup": warmup}
    student_cfg, teacher_cfg = config.train_config(), config.train_config(teacher=True)
    nas_cfg = config.train_config(nas=True)

    def batch_of(cfg_batch: int) -> int:
        if timing_batch is not None:
            return max(2, min(timing_batch, cfg_batch))  # BatchNorm needs 2 samples
        return cfg_batch if device.type == "cuda" else min(cfg_batch, 8)

    def price(stage: str, spec: NetSpec, epochs: int, batch: int) -> Priced:
        model = spec.build()
        cost = complexity(model, info)
        seconds = time_per_image(
            model, info, device=device, batch=batch_of(batch), steps=steps, warmup=warmup
        )
        return Priced(stage, spec.label, cost.params / 1e6, cost.mflops, epochs, images, seconds)

    plan: list[Priced] = []
    teacher_spec = spec_of(config.teacher, info)  # type: ignore[arg-type]
    if config.teacher_checkpoint is None:
        plan.append(price("teacher", teacher_spec, teacher_cfg.epochs, teacher_cfg.batch_size))
    else:
        cost = complexity(teacher_spec.build(), info)
        plan.append(Priced("teacher (loaded)", teacher_spec.label, cost.params / 1e6,
                           cost.mflops, 0, images, 0.0))  # fmt: skip
    s0 = config.student
    loaded_s0: Priced | None = None  # a loaded S0 costs nothing, but the baselines train its net
    if isinstance(s0, SearchedNet):
        plan += _searched("S0", s0, info, images, nas_cfg.epochs, device, batch_of, timing)
    else:
        s0_cfg = nas_cfg if s0.model == "genotype" else student_cfg
        stage = "student (S + A)" if config.method == "assistant" else "S0"
        plan.append(price(stage, spec_of(s0, info), s0_cfg.epochs, s0_cfg.batch_size))
        if config.student_checkpoint is not None:
            loaded_s0 = plan[-1]
            plan[-1] = replace(loaded_s0, stage="S0 (loaded)", epochs=0)
    if config.method == "assistant":
        plan.append(replace(plan[-1], stage="assistant A (S frozen)"))
    for i in range(1, config.stages + 1):
        net = config.res_student(i)
        if isinstance(net, SearchedNet):
            plan += _searched(f"R{i}", net, info, images, nas_cfg.epochs, device, batch_of, timing)
        else:
            cfg = nas_cfg if net.model == "genotype" else student_cfg
            plan.append(price(f"R{i}", spec_of(net, info), cfg.epochs, cfg.batch_size))
    trained = {  # the networks the baselines are made of
        p.stage.split()[0]: p
        for p in plan
        if p.stage in ("S0", "R1", "student (S + A)", "R1 fine-tune", "S0 fine-tune")
    }
    if loaded_s0 is not None:
        trained["S0"] = loaded_s0
    for kind in config.baselines:  # ensemble / together: S0's and R1's networks; feature_kd: S
        members = [trained[k] for k in ("S0", "R1", "student") if k in trained][:2]
        plan.append(
            Priced(
                f"baseline {kind}", " + ".join(m.network for m in members), None,
                sum(m.mflops or 0 for m in members), members[0].epochs, images,
                sum(m.seconds_per_image for m in members),
            )
        )  # fmt: skip
    what = "GPU" if device.type == "cuda" else device.type.upper()
    log(
        f"dry run of {config.method} on {config.dataset} ({'x'.join(map(str, info.input_shape))}, "
        f"{info.num_classes} "
        f"classes, {train_images} training images, D_v {config.val_size}); timed on {device}, "
        f"{steps} steps per network; nothing is trained"
    )
    log(format_table([p.row() for p in plan], list(plan[0].row())))
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


def _searched(
    name: str,
    net: SearchedNet,
    info: DatasetInfo,
    images: int,
    finetune_epochs: int,
    device: torch.device,
    batch_of: Callable[[int], int],
    timing: dict[str, Any],
) -> list[Priced]:
    spec = net.search
    shape = shape_for(spec, info)
    batch = batch_of(spec.batch_size)
    bilevel = 2 if spec.resolved_optimization == "bilevel" else 1
    out: list[Priced] = []

    def supernet(stage: str, ops: tuple[str, ...], layers: int) -> None:
        model = Supernet(
            replace(shape, layers=layers, channels=spec.supernet_channels(shape.channels)),
            uniform_candidates(ops, shape.steps),
            partial=spec.partial_channels,
            aux_skip=spec.aux_skip > 0,
        )
        params = sum(p.numel() for p in model.parameters())  # its MFLOPs are no network's
        seconds = time_per_image(model, info, device=device, batch=batch, **timing)
        out.append(Priced(f"{name} search {stage}", f"supernet C{model.shape.channels}L{layers}",
                          params / 1e6, None, spec.epochs, images, bilevel * seconds))  # fmt: skip

    if spec.strategy == "stacnas":
        from search.strategies import StacNAS

        supernet("stage 1", StacNAS.stage1_ops, spec.stage1_layers or spec.layers)
        supernet("stage 2", ("none", "sep_conv_3x3", "sep_conv_5x5"), spec.layers)
    else:
        supernet("darts", PRIMITIVES, spec.layers)
    reference = NetSpec.of_genotype(DARTS_V2, info, channels=shape.channels, layers=spec.layers)
    model = reference.build()
    cost = complexity(model, info)
    seconds = time_per_image(model, info, device=device, batch=batch_of(spec.batch_size),
                             **timing)  # fmt: skip
    scale = spec.budget_mflops / cost.mflops
    out.append(Priced(f"{name} fine-tune", f"searched (<= {spec.budget_mflops:g} MFLOPs)", None,
                      spec.budget_mflops, finetune_epochs, images, seconds * scale))  # fmt: skip
    return out
