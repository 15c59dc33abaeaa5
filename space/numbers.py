"""Numbers as a person reads them, one way in everything the project prints (the CLI, reports,
plots; the dashboard's ``app.js`` writes them the same way; pure Python, so the HTTP client may
import it): accuracy in percent with two decimals
(``97.25%``), MFLOPs to three significant digits (``0.242``, ``40.8``, ``1230``), Energy to four
(``0.9712``), parameter counts as ``24.6k`` and durations in words (``3 min 36 s``). JSON keeps
the numbers themselves; these are for text only. "-" stands where there is no number."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MISSING = "-"


def significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, never in exponent notation: ``0.242``,
    ``2.56``, ``10.0`` (9.996), ``1230`` (1234.5)."""
    rounded = float(f"{value:.{digits}g}")
    if rounded == 0 or not math.isfinite(rounded):
        return "0" if rounded == 0 else str(rounded)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def percent(fraction: float | None) -> str:
    """An accuracy (a fraction) in percent with two decimals: ``97.25%``."""
    return MISSING if fraction is None else f"{100 * fraction:.2f}%"


def mflops(value: float | None) -> str:
    """MFLOPs (or any cost in millions) to three significant digits."""
    return MISSING if value is None else significant(value, 3)


def energy(value: float | None) -> str:
    """Energy (the mean sum of squared softmax probabilities) to four significant digits."""
    return MISSING if value is None else significant(value, 4)


def count(value: float | None) -> str:
    """A count (parameters) to three significant digits: ``812``, ``24.6k``, ``1.23M``."""
    if value is None:
        return MISSING
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return significant(value / scale, 3) + unit
    return str(round(value))


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 36 s``, ``1 h 5 min`` (whole seconds; the smallest unit dropped past an
    hour)."""
    if seconds is None:
        return MISSING
    s = max(0, round(seconds))
    h, m, r = s // 3600, s // 60 % 60, s % 60
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    if m:
        return f"{m} min {r} s" if r else f"{m} min"
    return f"{r} s"


def cost_text(cost: str, value: float | None) -> str:
    """A Pareto front's cost as its kind reads: parameters counted (``24.6k``), MFLOPs (plain
    or adaptive) to three significant digits."""
    return count(value) if cost == "params" else mflops(value)


def number(value: float | None) -> str:
    """Any other measured float to four significant digits (an int as it is)."""
    if value is None:
        return MISSING
    return str(value) if isinstance(value, int) else significant(value, 4)


# how a field of the service's records reads: a job's metrics row, a trial's parameters, a cost
FIELDS: dict[str, Callable[[Any], str]] = {
    "accuracy": percent,
    "val_accuracy": percent,
    "mflops": mflops,
    "adaptive_mflops": mflops,
    "student_mflops": mflops,
    "assistant_mflops": mflops,
    "budget_mflops": mflops,
    "pct_of_T": mflops,
    "mparams": mflops,
    "params": count,
    "energy": energy,
}


def field_text(name: str, value: Any) -> Any:
    """``value`` of the field ``name`` as text by the convention above; a float of another field
    to four significant digits; anything else (an int, a name) as it is, None as "-"."""
    if value is None:
        return MISSING
    if name in FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return FIELDS[name](value)
    if name.endswith("seconds") and isinstance(value, int | float):
        return duration(value)
    return number(value) if isinstance(value, float) else value
