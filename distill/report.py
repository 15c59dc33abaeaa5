"""Reports: rows of metrics as JSON and as a readable table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from space.numbers import MISSING, field_text, number
from space.numbers import mflops as mflops_text


def _cell(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return number(value)
    return str(value)


# a number already written as text: 97.25%, 0.242, 1230, 24.6k, 1.0e-06, and "-" for none
_NUMBER_TEXT = re.compile(r"-|-?\d[\d.]*(e[+-]?\d+)?[%kMG]?")


def _numeric(value: object) -> bool:
    if isinstance(value, str):
        return _NUMBER_TEXT.fullmatch(value) is not None
    return value is None or isinstance(value, int | float)


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain-text table; numbers (and numbers written as text) right-aligned, text
    left-aligned."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [all(_numeric(row.get(c)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


Role = Literal["teacher", "stage", "adaptive", "baseline", "separated", "assisted"]
COLUMNS = (
    "model",
    "arch",
    "val_accuracy",
    "accuracy",
    "mparams",
    "mflops",
    "adaptive_mflops",
    "pct_of_T",
    "energy",
    "l2_to_T",
    "gi_over_c1_to_T",
)
SUMMARY_COLUMNS = (
    "model",
    "arch",
    "val_accuracy",
    "accuracy",
    "mflops",
    "adaptive_mflops",
    "pct_of_T",
    "energy",
)
# The table's headers (report.json keeps the field names, accuracy as a fraction).
DISPLAY = {
    "val_accuracy": "D_v acc",
    "accuracy": "test acc",
    "mflops": "MFLOPs",
    "adaptive_mflops": "MFLOPs adaptive",
    "pct_of_T": "% of T's MFLOPs",
    "mparams": "M params",
    "energy": "energy (test)",
    "l2_to_T": "L2 to T",
    "gi_over_c1_to_T": "GI/C1 to T",
}


def metrics_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    cell: Callable[[str, Any], object] = field_text,
    headers: Mapping[str, str] = DISPLAY,
) -> str:
    """Report rows (as report.json holds them) as a person reads them: each value as ``cell``
    shows its field (by default the one number convention, ``space.numbers``: accuracy
    ``97.25%``, MFLOPs ``0.242``, Energy ``0.9712``), under the field's header."""
    shown = [{headers.get(k, k): cell(k, v) for k, v in row.items()} for row in rows]
    return format_table(shown, [headers.get(c, c) for c in columns])


ENERGY_NOTE = (
    "energy: the mean over test samples of the sum of squared softmax probabilities (eq. 8-9; 1 "
    "for a one-hot prediction, 1/classes for a uniform one); Algorithm 1 stops on Energy over "
    "D_v (the log); MFLOPs adaptive: with sample-adaptive inference, the mean per test sample"
)
GI_NOTE = (
    "L2 to T: mean ||S - T||_2 of logits over all test samples; GI/C1 to T (eq. 21, Table VIII): "
    "mean ||S - T||_2 over the {n} test samples S0 gets wrong and some S_i of this run gets "
    "right (across runs, as the paper: python -m benchmarks.gi_cross_run RUN_DIR...)"
)


@dataclass(frozen=True)
class Row:
    """One model of a report. ``role`` says what it is (``stage`` rows are S0..S_n in order), so
    nothing parses ``model`` names back; ``model`` is the name a person reads."""

    model: str
    role: Role
    arch: str
    accuracy: float  # on the test set: reported, never chosen on
    mparams: float
    mflops: float
    adaptive_mflops: float
    pct_of_T: float
    energy: float
    l2_to_T: float
    gi_over_c1_to_T: float | None = None  # Table VIII's (residual.gi_over_c1_to_teacher)
    val_accuracy: float | None = None  # on D_v: what every decision reads
    stopped_after: dict[str, int] | None = None  # adaptive rows: samples per res-students used
    student_mflops: float | None = None  # the assistant method's parts
    assistant_mflops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Row:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def repair_text(repair: dict[str, Any], *, mflops: Callable[[float], str] = mflops_text) -> str:
    """One line of a search's provenance: what the budget repair changed in the search's choice
    (its MFLOPs written by ``mflops``)."""
    if repair["kept_search_choice"]:
        return (
            f"budget repair: none (the search's argmax was kept, {mflops(repair['mflops_after'])} "
            "MFLOPs)"
        )
    return (
        f"budget repair: {repair['operations_changed']} of {repair['operations']} operations and "
        f"{repair['channels_changed']} channels changed (channels {repair['channels_before']} -> "
        f"{repair['channels_after']}; {mflops(repair['mflops_before'])} -> "
        f"{mflops(repair['mflops_after'])} MFLOPs)"
    )


@dataclass
class Report:
    """What a run leaves: its rows, the stages it ran or reused, TH_energy (ResKD) and the
    deployable student (CombinedStudent or AssistedStudent)."""

    rows: list[Row]
    stages: list[dict[str, Any]]
    threshold: float | None
    combined: Any
    logits_cached: bool
    validation: dict[str, Any]
    searches: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)  # from the paper preset's protocol
    warnings: list[str] = field(default_factory=list)  # what a user should know of the outcome
    stop_reason: str | None = None  # why Algorithm 1 stopped where it did (ResKD)

    def row(self, role: Role) -> Row | None:
        """The last row of ``role`` (``stage``: S_n)."""
        return next((r for r in reversed(self.rows) if r.role == role), None)

    def table(self) -> str:
        """The rows as a person reads them: accuracy in percent, each column's unit in its
        header, and what Energy and the distances are (all on the test set) under the table."""
        lines = [metrics_table([r.to_dict() for r in self.rows], COLUMNS), ENERGY_NOTE]
        if self.stop_reason is not None:
            lines.append(f"stopped: {self.stop_reason}")
        for found in self.searches:
            if found.get("repair"):
                lines.append(f"{found.get('network', '?')} search, {repair_text(found['repair'])}")
        if any(r.gi_over_c1_to_T is not None for r in self.rows):
            lines.append(GI_NOTE.format(n=self.extra.get("gi_samples", "?")))
        lines += [f"note: {d}" for d in self.deviations]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "stages": self.stages,
            "threshold": self.threshold,
            "logits": "cached once per stage"
            if self.logits_cached
            else "computed per batch (random augmentation)",
            "validation": self.validation,
            "searches": self.searches,
            "deviations": self.deviations,
            "warnings": self.warnings,
            **({} if self.stop_reason is None else {"stop_reason": self.stop_reason}),
            **self.extra,
        }

    def write(self, out_dir: Path) -> None:
        (out_dir / "report.json").write_text(json.dumps(self.to_dict(), indent=2))
        (out_dir / "report.txt").write_text(self.table() + "\n")
