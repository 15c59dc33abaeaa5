"""Table II's baselines (ResKD paper): the architectures of S0 and R1, both distilled from T with
the run's KD settings. ``ensemble`` trains them independently and sums their logits;
``together`` trains their sum as one network."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from distill.combined import LogitSum
from distill.models import NetSpec, complexity
from distill.prepare import Prepared
from distill.report import Row
from distill.residual import ResidualDistillation, stage_seed
from distill.train import TrainConfig

Baseline = Literal["ensemble", "together", "feature_kd", "plain_student"]
# the baselines of each run method (``feature_kd`` and ``plain_student`` are the assistant
# method's, in its own run)
BASELINES: dict[str, tuple[Baseline, ...]] = {
    "reskd": ("ensemble", "together"),
    "assistant": ("feature_kd", "plain_student"),
}


def baseline_row(
    kind: str,
    p: Prepared,
    specs: list[NetSpec],
    t_train: Tensor | None,
) -> Row:
    """Train (or reuse) the baseline ``kind`` and report it. Both networks learn from T itself,
    as S0 does, so they take S0's KD settings (``student_kd``, else ``kd``); a genotype network
    among them is trained as a searched res-student is (``nas_train``, gradients clipped at 5)."""
    if kind not in BASELINES["reskd"]:
        raise ValueError(f"baselines: {kind!r} is not a baseline of method reskd")
    config = p.config
    kd = config.kd_for(0)

    def train_cfg_for(members: list[NetSpec]) -> TrainConfig:
        return config.train_config(nas=any(m.genotype for m in members))

    train_cfg = train_cfg_for(specs)
    cache = (t_train, None) if t_train is not None else None
    torch.manual_seed(stage_seed(config.seed, f"baseline-{kind}"))
    nets = [s.build() for s in specs]
    payload = {
        "specs": [s.to_dict() for s in specs],
        "kd": kd.settings(),
        "train": train_cfg.to_dict(),
        "input": p.t_key,
        **p.data_key,
    }

    def train(
        name: str, model: torch.nn.Module, extra: dict[str, int], desc: str, cfg: TrainConfig
    ) -> None:
        task = ResidualDistillation(
            model,
            objective=kd.objective(),
            method=kd,  # no peer: a baseline trains its networks alone
            teacher=None if cache else p.teacher,
            cache=cache,
        )
        result = p.store.train(
            name, payload | extra | {"train": cfg.to_dict()}, {"model": model}, task=task,
            train_data=p.data.train, config=cfg, desc=desc, progress=p.progress,
        )  # fmt: skip
        p.stages.append(result.summary())

    if kind == "ensemble":
        for j, net in enumerate(nets):
            cfg = train_cfg_for([specs[j]])
            train("ensemble", net, {"member": j}, f"ensemble member {j}", cfg)
    whole = LogitSum(nets)
    if kind == "together":
        train("together", whole, {}, "trained together", train_cfg)
    logits = p.logits_on(whole.eval(), p.data.test)
    costs = [complexity(net, p.data.info) for net in nets]
    arch = "-".join(s.label for s in specs)
    return p.row(
        kind, "baseline", arch, logits, sum(c.params for c in costs),
        sum(c.mflops for c in costs), val_logits=p.logits_on(whole, p.d_v),
    )  # fmt: skip
