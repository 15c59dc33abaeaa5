"""Table VIII of ResKD (Li et al.) across runs. Each ResKD run stores its students' per-sample test
outputs (:class:`SampleOutputs`, ``test_outputs.npz`` in the run directory); :func:`cross_run_gi`
reads GI/C1 to T (eq. 21) over the samples S0 gets wrong and any ResKD student of the compared
runs gets right, the same samples for every row, as the paper's table does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.residual import fixed_by_residuals, gi_over_c1_to_teacher, gi_per_sample, predicted
from distill.stages import write_atomic

OUTPUTS_FILE = "test_outputs.npz"


@dataclass(frozen=True)
class SampleOutputs:
    """One run's S0, S1, ..., S_n on its test set, per sample: the predicted class and GI/C1
    (``gi_per_sample``, ||S_i - T||_2), all that Table VIII reads (a few bytes a sample and
    student, where logits take four a class)."""

    labels: Tensor  # N test labels
    models: list[str]  # "S0", "S1", ...
    archs: list[str]  # each S_i's networks, e.g. "resnet20-resnet14"
    predictions: Tensor  # models x N predicted classes
    gi: Tensor  # models x N per-sample GI/C1 to T
    teacher: str  # the teacher's identity (arch@digest): GI is a distance to it

    @classmethod
    def of(
        cls,
        *,
        stages: Sequence[Tensor],
        teacher_logits: Tensor,
        labels: Tensor,
        archs: Sequence[str],
        teacher: str,
    ) -> SampleOutputs:
        """From the logits of S0, ..., S_n and of T on the test set."""
        return cls(
            labels=labels,
            models=[f"S{i}" for i in range(len(stages))],
            archs=list(archs),
            predictions=torch.stack([predicted(s) for s in stages]),
            gi=torch.stack([gi_per_sample(s, teacher_logits) for s in stages]),
            teacher=teacher,
        )

    def save(self, run_dir: Path) -> None:
        """``run_dir/test_outputs.npz``, written to a temporary name and renamed."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            labels=self.labels.numpy(),
            models=np.array(self.models),
            archs=np.array(self.archs),
            predictions=self.predictions.to(torch.int32).numpy(),
            gi=self.gi.to(torch.float32).numpy(),
            teacher=np.array(self.teacher),
        )
        write_atomic(run_dir / OUTPUTS_FILE, buffer.getvalue())

    @classmethod
    def load(cls, run_dir: Path) -> SampleOutputs:
        """What :meth:`save` wrote; FileNotFoundError names the file a run lacks."""
        with np.load(run_dir / OUTPUTS_FILE, allow_pickle=False) as f:
            return cls(
                labels=torch.from_numpy(f["labels"]),
                models=[str(m) for m in f["models"]],
                archs=[str(a) for a in f["archs"]],
                predictions=torch.from_numpy(f["predictions"]).long(),
                gi=torch.from_numpy(f["gi"]),
                teacher=str(f["teacher"]),
            )


@dataclass(frozen=True)
class GIRow:
    """A student of Table VIII: its test accuracy, mean L2 to T over the whole test set, and
    GI/C1 to T over the cross-run samples (None when there are none)."""

    run: str
    model: str
    arch: str
    accuracy: float
    l2_to_T: float
    gi_over_c1_to_T: float | None


@dataclass(frozen=True)
class GITable:
    rows: list[GIRow]
    samples: int  # S0 wrong, some ResKD student of the runs right


def cross_run_gi(runs: Mapping[str, SampleOutputs]) -> GITable:
    """Table VIII over several runs (by name) on one test set, with one teacher and one S0: GI/C1
    to T of every student, averaged over the samples S0 gets wrong and any S_i (i >= 1) of any
    run gets right. A student that two runs share (the same networks, the same outputs: a
    reused stage) is one row. ValueError when the runs do not share test set, teacher or S0."""
    if not runs:
        raise ValueError("no runs to compare")
    (first_name, first), *others = runs.items()
    for name, run in others:
        _check_comparable(first_name, first, name, run)
    mask = fixed_by_residuals(
        [first.predictions[0], *(p for run in runs.values() for p in run.predictions[1:])],
        first.labels,
    )
    rows: list[GIRow] = []
    seen: list[tuple[str, Tensor, Tensor]] = []
    for name, run in runs.items():
        for i, (model, arch) in enumerate(zip(run.models, run.archs, strict=True)):
            preds, gi = run.predictions[i], run.gi[i]
            if any(a == arch and torch.equal(p, preds) and torch.equal(g, gi) for a, p, g in seen):
                continue
            seen.append((arch, preds, gi))
            rows.append(
                GIRow(
                    run=name, model=model, arch=arch,
                    accuracy=float((preds == run.labels).float().mean()),
                    l2_to_T=float(gi.mean()), gi_over_c1_to_T=gi_over_c1_to_teacher(gi, mask),
                )
            )  # fmt: skip
    return GITable(rows, int(mask.sum()))


def _check_comparable(a: str, first: SampleOutputs, b: str, run: SampleOutputs) -> None:
    if not torch.equal(first.labels, run.labels):
        raise ValueError(f"{b}: another test set than {a}'s (the labels differ)")
    if first.teacher != run.teacher:
        raise ValueError(f"{b}: teacher {run.teacher}, {a}: {first.teacher}; GI is to one T")
    if not torch.equal(first.predictions[0], run.predictions[0]):
        raise ValueError(
            f"{b}: its S0 predicts otherwise than {a}'s; Table VIII's rows share one S0 (run "
            "them with one stages directory, so that S0 is reused)"
        )
