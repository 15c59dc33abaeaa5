"""ResKD's Algorithm 1 (Li et al.) as stored stages: teacher -> S0 by KD -> res-students R_i on
the residual T - S_{i-1} until Energy(S_i, D_v) > ratio * Energy(T, D_v) -> TH_energy (eq. 10) ->
the sample-adaptive combined student (Algorithm 2) and the report. The data and the teacher
come prepared (``distill.prepare``); each stage trains under the run's KD method
(``distill.methods``).

Each res-student comes from a :class:`Source`: a zoo network or a given genotype
(:func:`fixed`), or one a caller searches first (``search.pipeline``): this module never imports
the search. A source sees the stage's inputs (the teacher, S_{i-1}, cached logits) and returns the
network to train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from distill.baselines import baseline_row
from distill.combined import CombinedStudent, LogitSum, evaluate_adaptive
from distill.gap_info import SampleOutputs
from distill.losses import Objective
from distill.methods import MethodConfig
from distill.models import NetSpec, complexity
from distill.prepare import Prepared, load_checkpoint
from distill.report import Report, Row, repair_text
from distill.residual import (
    ResidualDistillation,
    dataset_energy,
    fixed_by_residuals,
    should_stop,
    stage_seed,
    zero_output,
)
from distill.stages import StageResult, stage_key
from distill.train import accuracy

# ------------------------------------------------------------------------------------------------
# Res-students: where each stage's network comes from
# ------------------------------------------------------------------------------------------------


@dataclass
class StageInputs:
    """What a source sees at stage ``i`` (0 = S0): the objective of eq. 6 and what it reads."""

    i: int
    name: str  # "S0", "R1", ...
    method: MethodConfig
    objective: Objective
    teacher: nn.Module
    base: nn.Module | None  # S_{i-1} (None for S0)
    cache: tuple[Tensor, Tensor | None] | None  # cached (T, S_{i-1}) logits on the training set
    previous_key: str
    prepared: Prepared


@dataclass
class ResStudent:
    """The network a source gives for a stage, and what its stage key adds (a search's key)."""

    spec: NetSpec
    inputs: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # the search's record, when it was searched


class Source(Protocol):
    def __call__(self, stage: StageInputs) -> ResStudent: ...


def fixed(spec: NetSpec) -> Source:
    """A zoo network or a given genotype's network."""
    return lambda stage: ResStudent(spec)


# ------------------------------------------------------------------------------------------------
# Algorithm 1
# ------------------------------------------------------------------------------------------------


class ResKD:
    """S0, then R_1, R_2, ... one :meth:`step` at a time, then :meth:`finish`."""

    def __init__(self, prepared: Prepared) -> None:
        p = self.p = prepared
        self.cached = not p.data.augmented
        self.t_train = p.logits_on(p.teacher, p.data.train_eval) if self.cached else None
        self.e_teacher = dataset_energy(p.logits_on(p.teacher, p.d_v))
        self.nets: list[nn.Module] = []
        self.specs: list[NetSpec] = []
        self.s_val: Tensor | None = None
        self.val_logits: list[Tensor] = []  # S0, S1, ..., S_i on D_v
        self.s_train: Tensor | None = None
        self.test_logits: list[Tensor] = []
        self.searches: list[dict[str, Any]] = []
        self.previous_key = p.t_key
        self.stop_reason: str | None = None  # Energy's, once it says stop
        ratio = p.config.ratio
        p.log(
            f"teacher: Energy(T, D_v) = {self.e_teacher:.4f}; "
            + (
                f"termination off (ratio null): {p.config.stages} res-students train"
                if ratio is None
                else f"stop when Energy(S_i, D_v) > {ratio} x {self.e_teacher:.4f} = "
                f"{ratio * self.e_teacher:.4f}"
            )
        )

    def inputs(self, i: int) -> StageInputs:
        method = self.p.config.kd_for(i)
        cache = (self.t_train, self.s_train) if self.t_train is not None else None
        return StageInputs(
            i, "S0" if i == 0 else f"R{i}", method, method.objective(), self.p.teacher,
            LogitSum(list(self.nets)) if self.nets else None, cache, self.previous_key, self.p,
        )  # fmt: skip

    def step(self, i: int, source: Source) -> bool:
        """Train stage ``i``'s network from ``source``; True when Energy says stop."""
        p, stage = self.p, self.inputs(i)
        res = source(stage)
        repair = (res.search or {}).get("repair")
        if repair and repair.get("operations_changed"):
            p.warn(f"{stage.name}: {repair_text(repair)}: the budget, not the search, chose them")
        if res.search is not None:
            self.searches.append({"network": stage.name, **res.search})
        net, result = self._train(stage, res)
        self.previous_key = result.key
        self.nets.append(net)
        self.specs.append(res.spec)
        r_val = p.logits_on(net, p.d_v)
        self.s_val = r_val if self.s_val is None else self.s_val + r_val
        self.val_logits.append(self.s_val)
        self.test_logits.append(p.logits_on(net, p.data.test))
        if self.cached:
            r_train = p.logits_on(net, p.data.train_eval)
            self.s_train = r_train if self.s_train is None else self.s_train + r_train
        e = dataset_energy(self.s_val)
        stop = i > 0 and should_stop(e, self.e_teacher, p.config.ratio)
        if stop:
            self.stop_reason = (
                f"Energy(S{i}, D_v) {e:.4f} > {p.config.ratio} x Energy(T, D_v) "
                f"{self.e_teacher:.4f}"
            )
        p.stages.append(
            result.summary()
            | {"network": stage.name, "arch": res.spec.label, "energy_dv": round(e, 5)}
        )
        p.log(
            f"S{i}: Energy(S{i}, D_v) = {e:.4f} ({100 * e / self.e_teacher:.1f}% of T)"
            + (" -> stop" if stop else "")
        )
        return stop

    def _train(self, stage: StageInputs, res: ResStudent) -> tuple[nn.Module, StageResult]:
        p, i, method = self.p, stage.i, stage.method
        torch.manual_seed(stage_seed(p.config.seed, f"stage{i}"))
        net = res.spec.build()
        if i == 0 and p.config.student_checkpoint is not None:
            return net, self._load_student(net, res.spec, p.config.student_checkpoint)
        peer = res.spec.build() if method.needs_peer else None
        if i > 0 and method.zero_init_residual:
            for r in (net, peer):
                if r is not None:
                    zero_output(r)
        task = ResidualDistillation(
            net,
            objective=stage.objective,
            method=method,
            teacher=None if stage.cache else p.teacher,
            base=stage.base,  # D_v accuracy each epoch is that of S_i = S_{i-1} + R_i
            cache=stage.cache,
            peer=peer,
        )
        kind = "finetune" if res.inputs else "student" if i == 0 else "residual"
        stage_cfg = p.config.train_config(nas=res.spec.genotype is not None)
        payload = {
            "net": res.spec.to_dict(),
            "kd": method.for_stage(i),
            "train": stage_cfg.to_dict(),
            "input": stage.previous_key,
            "stage": i,
            **p.data_key,
            **res.inputs,
        }
        result = p.store.train(
            kind, payload, {"model": net}, task=task, train_data=p.data.train, config=stage_cfg,
            desc=f"{stage.name} {res.spec.label}", progress=p.progress, eval_data=p.d_v,
        )  # fmt: skip
        net.eval()
        return net, result

    def _load_student(self, net: nn.Module, spec: NetSpec, path: str) -> StageResult:
        """S0 given trained (``student_checkpoint``): loaded instead of trained. Its key names
        the file and the network, so the res-students trained on it are stored apart from those
        of a trained S0."""
        p = self.p
        load_checkpoint(net, path, "student_checkpoint", spec.label)
        net.eval()
        key = stage_key("student", {"checkpoint": path, "net": spec.to_dict(), "input": p.t_key})
        p.log(f"S0 {spec.label}: loaded from {path}")
        return StageResult("student", key, False, 0.0, Path(path).parent)

    def finish(self) -> Report:
        """TH_energy, the combined student (saved) and the report (written)."""
        p = self.p
        assert self.s_val is not None, "no stage ran"
        threshold = dataset_energy(self.s_val)  # eq. 10: TH_energy = Energy(S_n, D_v)
        thresholds = [dataset_energy(v) for v in self.val_logits]  # the same for every S_i
        val_acc = [accuracy(v, p.val_labels) for v in self.val_logits]
        best = self._deploy_stage(val_acc)
        costs = [complexity(net, p.data.info) for net in self.nets]
        combined = CombinedStudent(
            self.nets[0], self.nets[1:], threshold=threshold, specs=self.specs,
            mflops=[c.mflops for c in costs], thresholds=thresholds, deploy_stage=best,
            preprocessing=p.data.info.preprocessing.to_dict(),
        )  # fmt: skip
        combined.save(p.out_dir / "combined_student.pt")
        stage_logits = list(torch.stack(self.test_logits).cumsum(dim=0))  # S0, S1, ..., S_n
        p.fixed = fixed_by_residuals(stage_logits, p.labels) if len(stage_logits) > 1 else None
        rows = self._rows(combined, stage_logits, costs)
        SampleOutputs.of(
            stages=stage_logits, teacher_logits=p.t_test, labels=p.labels,
            archs=[r.arch for r in rows if r.role == "stage"], teacher=p.identity["id"],
        ).save(p.out_dir)  # fmt: skip
        deployed = combined.truncated(best)
        shipped = evaluate_adaptive(deployed, p.data.test, device=p.device)
        report = Report(
            rows, p.stages, threshold, combined, self.cached,
            p.split.to_dict() | {"indices": f"{p.split.size} indices in validation_split.json"},
            self.searches, deviations=p.config.deviations(),
            extra={"teacher": p.identity} | {
                "thresholds": thresholds,
                "deploy": {
                    "stage": best, "model": f"S{best}", "threshold": deployed.threshold,
                    "val_accuracy": val_acc[best], "accuracy": shipped.accuracy,
                    "adaptive_mflops": shipped.expected_mflops,
                },
            } | ({} if p.fixed is None else {"gi_samples": int(p.fixed.sum())}),
            warnings=p.warnings, stop_reason=self._stop_reason(),
        )  # fmt: skip
        report.write(p.out_dir)
        p.log("\n" + report.table())
        how = "cached once per stage" if self.cached else "computed per batch (random augmentation)"
        logits = f"teacher and earlier students' logits {how}"
        p.log(f"\nTH_energy = {threshold:.4f}; {logits}")
        return report

    def _stop_reason(self) -> str:
        """Why the run has the res-students it has: Energy (Algorithm 1's termination) or, with
        Energy silent or termination off, the stages asked for."""
        c, n = self.p.config, len(self.nets) - 1
        limit = (
            f"max_stages {c.max_stages} reached"
            if c.max_stages is not None
            else f"res_students exhausted ({n} given)"
        )
        if self.stop_reason is None:
            return limit
        return self.stop_reason + (f" ({limit} too)" if n == c.stages else "")

    def _deploy_stage(self, val_acc: list[float]) -> int:
        """The S_i the export ships: the best on D_v (ties: fewer networks); a stage below the
        one before it, or a best before S_n, is a warning."""
        p = self.p
        best = max(range(len(val_acc)), key=lambda i: (val_acc[i], -i))
        for i in range(1, len(val_acc)):
            if val_acc[i] < val_acc[i - 1]:
                p.warn(
                    f"S{i} is below S{i - 1} on D_v ({100 * val_acc[i]:.2f}% < "
                    f"{100 * val_acc[i - 1]:.2f}%): R{i} lowered the accuracy"
                )
        if best < len(val_acc) - 1:
            p.warn(
                f"S{best} is the best student on D_v ({100 * val_acc[best]:.2f}%); the export "
                f"ships S{best} unless told otherwise (reskd export --stages N)"
            )
        return best

    def _rows(
        self, combined: CombinedStudent, stage_logits: list[Tensor], costs: list[Any]
    ) -> list[Row]:
        """The report's rows: T, every S_i, the adaptive S_n and the baselines asked for."""
        p = self.p
        adaptive = evaluate_adaptive(combined, p.data.test, device=p.device)
        adaptive_val = evaluate_adaptive(combined, p.d_v, device=p.device)
        rows = [p.teacher_row()]
        params, mflops = 0, 0.0
        for i, (running, cost) in enumerate(zip(stage_logits, costs, strict=True)):
            params += cost.params
            mflops += cost.mflops
            arch = "-".join(s.label for s in self.specs[: i + 1])
            rows.append(
                p.row(
                    f"S{i}", "stage", arch, running, params, mflops,
                    val_logits=self.val_logits[i],
                )
            )  # fmt: skip
        rows.append(
            p.row(
                f"S{len(self.nets) - 1} adaptive", "adaptive", rows[-1].arch, adaptive.logits,
                params, mflops, adaptive_mflops=adaptive.expected_mflops,
                stopped_after=adaptive.stage_histogram, val_logits=adaptive_val.logits,
            )
        )  # fmt: skip
        for kind in p.config.baselines:
            rows.append(baseline_row(kind, p, self.specs[:2], self.t_train))
        return rows
