"""What a waiting client shows: on a terminal, one tqdm bar per phase of a job's stages (a
STACNAS search's two supernets apart) or one over a sweep's trials; elsewhere (a log file, CI, a
pipe) a plain line when something starts or ends and otherwise at most one every ``every``
seconds.

A job's bar shows the rate and the ETA the worker measured over the running phase (sent in the
job's ``progress``), not tqdm's own: the client sees the job only when it changes, so tqdm's
estimate from the moments of its updates would count a resumed stage's epochs, or a burst of
queued events, as work done in an instant. One rate, one ETA.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from space.numbers import duration, percent

TERMINAL = ("succeeded", "failed", "cancelled")
# no tqdm rate or ETA: the worker's, in the postfix
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}{postfix}"


def rate_text(rate: float | None, unit: str | None) -> str | None:
    """``12.3 batch/s``, or ``4.2 s/epoch`` below one a second; None while unknown."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        return None
    unit = unit or "epoch"
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


def phase_name(p: dict[str, Any]) -> str:
    """The stage, and the phase within it when that says more (``search R1 / search stage2``)."""
    stage, phase = p.get("stage") or "", p.get("phase") or ""
    if not phase or phase in stage:
        return stage
    return f"{stage} / {phase}" if stage else phase


def _position(p: dict[str, Any]) -> tuple[int, int, str]:
    """Work done and in all in the phase: batches once the worker sent them, else epochs."""
    epochs, epoch = int(p.get("epochs") or 0), int(p.get("epoch") or 0)
    batches = int(p.get("batches") or 0)
    if batches:
        return epoch * batches + int(p.get("batch") or 0), epochs * batches, "batch"
    return epoch, epochs, "epoch"


def status_text(p: dict[str, Any], *, live: bool = True) -> str:
    """Epoch (and batch inside a long one: a search's epochs take minutes), the loss rounded,
    and while the phase runs (``live``) its rate and ETA, as far as they are known (no ETA
    between stages)."""
    parts = []
    if p.get("epochs"):
        parts.append(f"epoch {p.get('epoch') or 0}/{p['epochs']}")
    if p.get("batches") and p.get("batch") is not None and p.get("batch") != p.get("batches"):
        parts.append(f"batch {p['batch']}/{p['batches']}")
    if isinstance(p.get("loss"), int | float):
        parts.append(f"loss {p['loss']:.4f}")
    if not live:
        return ", ".join(parts)
    rate = rate_text(p.get("rate"), p.get("unit"))
    if rate:
        parts.append(rate)
    if isinstance(p.get("eta_seconds"), int | float) and p["eta_seconds"] > 0:
        parts.append(f"ETA {duration(p['eta_seconds'])}")
    return ", ".join(parts)


class _Lines:
    """Plain lines, rate-limited: ``say(text, now=True)`` prints at once (a start or an end),
    ``say(text)`` only when ``every`` seconds passed since the last line and the text changed."""

    def __init__(self, file: TextIO, every: float, clock: Callable[[], float]) -> None:
        self.file, self.every, self.clock = file, every, clock
        self.last_at = -math.inf
        self.last_text: str | None = None

    def say(self, text: str, *, now: bool = False, heartbeat: float | None = None) -> None:
        t = self.clock()
        due = t - self.last_at >= self.every and text != self.last_text
        quiet_too_long = heartbeat is not None and t - self.last_at >= heartbeat
        if now or due or quiet_too_long:
            print(text, file=self.file, flush=True)
            self.last_at, self.last_text = t, text


class _View:
    """Where progress goes (``file``, stderr by default), and how: bars when it is a terminal
    (or ``interactive``), rate-limited lines otherwise."""

    def __init__(
        self,
        file: TextIO | None,
        interactive: bool | None,
        every: float,
        clock: Callable[[], float],
    ) -> None:
        self.file = file or sys.stderr
        isatty = getattr(self.file, "isatty", None)
        self.interactive = bool(isatty and isatty()) if interactive is None else interactive
        self.lines = _Lines(self.file, every, clock)
        self.bar: Any = None


class JobView(_View):
    """Shows one job's progress from the successive states of the job (``GET /v1/jobs/{id}``)."""

    def __init__(
        self,
        job_id: int,
        *,
        file: TextIO | None = None,
        interactive: bool | None = None,
        every: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(file, interactive, every, clock)
        self.job_id = job_id
        self.key: tuple[str | None, str | None] | None = None
        self.state: str | None = None

    def update(self, job: dict[str, Any]) -> None:
        p, state = job.get("progress") or {}, job.get("state")
        key = (p.get("stage"), p.get("phase"))
        was, self.state = self.state, state
        if was in TERMINAL:
            return  # said already
        if state != was and state in ("queued", "running") and not p.get("stage"):
            self.lines.say(f"job {self.job_id} {state}", now=True)
        if p.get("stage") and p.get("epochs") and state not in TERMINAL:
            started = key != self.key
            if started:
                self._finish_phase(done=True)
                self.key = key
            if self.interactive:
                self._draw(p, started)
            else:
                text = f"job {self.job_id} {phase_name(p)}: {status_text(p)}"
                self.lines.say(text, now=started)
        if state in TERMINAL:
            self._finish_phase(done=state == "succeeded")
            self.lines.say(self._end_text(job), now=True)

    def close(self) -> None:
        self._finish_phase(done=False)

    def _draw(self, p: dict[str, Any], started: bool) -> None:
        from tqdm import tqdm

        n, total, unit = _position(p)
        if started or self.bar is None:
            self.bar = tqdm(
                total=total,
                desc=f"job {self.job_id} {phase_name(p)}",
                unit=unit,
                file=self.file,
                dynamic_ncols=True,
                bar_format=BAR_FORMAT,
            )
        bar = self.bar
        if bar.total != total or bar.unit != unit:  # batches became known after an epoch
            bar.total, bar.unit = total, unit
        bar.n = min(n, total)
        parts = [s for s in status_text(p).split(", ") if not s.startswith(("epoch", "batch"))]
        bar.set_postfix_str(", ".join(parts), refresh=False)
        bar.refresh()

    def _finish_phase(self, *, done: bool) -> None:
        if self.bar is not None:
            if done:
                self.bar.n = self.bar.total
                self.bar.set_postfix_str("", refresh=False)
                self.bar.refresh()
            self.bar.close()
            self.bar = None

    def _end_text(self, job: dict[str, Any]) -> str:
        text = f"job {self.job_id} {job['state']}"
        if job.get("error"):
            text += f": {str(job['error']).splitlines()[-1][:300]}"
        return text


class SweepView(_View):
    """Shows a sweep's trials: a bar (tqdm's own rate: it sees every trial end) or lines."""

    def __init__(
        self,
        sweep_id: int,
        *,
        file: TextIO | None = None,
        interactive: bool | None = None,
        every: float = 20.0,
        heartbeat: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(file, interactive, every, clock)
        self.sweep_id = sweep_id
        self.heartbeat = heartbeat

    def update(self, sweep: dict[str, Any]) -> None:
        states = sweep["trial_states"]
        ended = sum(states.get(k, 0) for k in TERMINAL)
        best = max(
            (t["val_accuracy"] for t in sweep["trial_list"] if t.get("val_accuracy") is not None),
            default=None,
        )
        facts = {
            "running": states.get("running", 0),
            "queued": states.get("queued", 0),
            "failed": states.get("failed", 0),
            "best D_v acc": percent(best),
        }
        if self.interactive:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(
                    total=sweep["trials"], desc=f"sweep {self.sweep_id}", unit="trial",
                    file=self.file, dynamic_ncols=True,
                )  # fmt: skip
            if ended > self.bar.n:
                self.bar.update(ended - self.bar.n)  # tqdm times the trials' ends itself
            self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in facts.items()))
        else:
            text = f"sweep {self.sweep_id}: {ended}/{sweep['trials']} trials ended, " + ", ".join(
                f"{k} {v}" for k, v in facts.items()
            )
            self.lines.say(text, heartbeat=self.heartbeat)
        if sweep["state"] != "running":
            self.close()
            self.lines.say(f"sweep {self.sweep_id} {sweep['state']}", now=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
