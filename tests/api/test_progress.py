"""What `reskd submit --wait` and `reskd sweep --wait` show (issue 18, item 3): bars showed rates
like 6,754 epoch/s and two ETAs, STACNAS's two stages shared one bar that dropped from 4/4 to 1/4,
a bar froze at 6/8, and off a terminal `reskd sweep --wait` redrew 1,358 times (130 KB)."""

from __future__ import annotations

import io
import re
from typing import Any

from api.client.progress import JobView, SweepView, rate_text
from space.numbers import duration


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def search_job(phase: str, epoch: int, batch: int, state: str = "running") -> dict[str, Any]:
    """A STACNAS search's progress as the worker writes it: 2 epochs of 90 batches a phase."""
    return {
        "state": state,
        "progress": {
            "stage": "R1 search (stacnas)", "phase": phase, "epoch": epoch, "epochs": 2,
            "batch": batch, "batches": 90, "loss": 0.41234567, "rate": 25.0, "unit": "batch",
            "eta_seconds": (180 - epoch * 90 - batch) / 25.0,
        },
    }  # fmt: skip


def a_search(view: JobView, clock: Clock) -> None:
    """Both phases, an update every 0.2 s as the event stream sends them, then the end."""
    view.update({"state": "queued", "progress": {}})
    for phase in ("search stage1", "search stage2"):
        for position in range(0, 180, 5):
            view.update(search_job(phase, position // 90, position % 90))
            clock.t += 1.0  # 36 s a phase
    view.update({"state": "succeeded", "progress": {}})


def test_off_a_terminal_a_job_prints_a_few_plain_lines_a_minute() -> None:
    out, clock = io.StringIO(), Clock()
    a_search(JobView(7, file=out, every=20.0, clock=clock), clock)
    text = out.getvalue()
    assert "\r" not in text and "|" not in text  # no bar drawn into a log
    lines = text.splitlines()
    # a line when the job is queued, when each phase starts, every 20 s inside one, at the end
    assert lines[0] == "job 7 queued" and lines[-1] == "job 7 succeeded"
    assert 5 <= len(lines) <= 8, lines
    stage1 = [x for x in lines if "search stage1" in x]
    stage2 = [x for x in lines if "search stage2" in x]
    assert stage1 and stage2  # the two supernets apart
    assert stage1[0] == (
        "job 7 R1 search (stacnas) / search stage1: epoch 0/2, batch 0/90, loss 0.4123, "
        "25.0 batch/s, ETA 7 s"
    )
    assert all(line.count("ETA") <= 1 for line in lines)


def test_on_a_terminal_each_phase_has_its_own_bar_with_one_rate_and_one_eta() -> None:
    out, clock = io.StringIO(), Clock()
    view = JobView(7, file=out, interactive=True, clock=clock)
    a_search(view, clock)
    frames = [f for f in re.split(r"[\r\n]", out.getvalue()) if f.strip()]
    bars = [f for f in frames if "|" in f]
    stage1 = [f for f in bars if "search stage1" in f]
    stage2 = [f for f in bars if "search stage2" in f]
    assert stage1 and stage2
    assert not any("search stage2" in f for f in bars[: len(stage1)])  # stage1's bar ends first
    for frames_of_phase in (stage1, stage2):
        # counted in batches of the phase (not epochs of the stage): 0..180, ending full
        assert all("/180 batch" in f for f in frames_of_phase)
        assert frames_of_phase[-1].split("|")[2].strip().startswith("180/180")
        done = [int(f.split("|")[2].split("/")[0]) for f in frames_of_phase]
        assert done == sorted(done)  # never drops (it dropped from 4/4 to 1/4)
    for f in bars:
        # the worker's rate and ETA only: no tqdm it/s or elapsed<remaining beside them
        assert f.count("ETA") <= 1 and "it/s" not in f and "<" not in f
        assert not re.search(r"\d{3,}(\.\d+)? (batch|epoch)/s", f)  # no 6,754 epoch/s
    assert any("25.0 batch/s, ETA 7 s" in f for f in stage1)


def test_a_bar_is_filled_when_its_phase_ends_between_two_updates() -> None:
    """The last update the client sees of a phase may be 6/8; the bar still ends at 8/8."""
    out = io.StringIO()
    view = JobView(1, file=out, interactive=True)
    view.update(search_job("search stage1", 1, 30))
    view.update({"state": "succeeded", "progress": {}})
    last = [f for f in re.split(r"[\r\n]", out.getvalue()) if "|" in f][-1]
    assert "100%" in last and "180/180" in last


def test_off_a_terminal_a_sweep_prints_a_line_when_it_changes_not_per_poll() -> None:
    out, clock = io.StringIO(), Clock()
    view = SweepView(3, file=out, every=20.0, heartbeat=60.0, clock=clock)
    trials = 8
    for poll in range(1358):  # the redraw count of the issue, one poll every 2 s
        ended = min(trials, poll // 150)
        running = 0 if ended == trials else 1
        sweep = {
            "state": "running" if ended < trials else "succeeded",
            "trials": trials,
            "trial_states": {"succeeded": ended, "running": running,
                             "queued": trials - ended - running},
            # the line follows D_v; test accuracy (here a worse and unordered one) is never chosen on
            "trial_list": [{"val_accuracy": 0.9 + i / 100, "accuracy": 0.99 - i / 100}
                           for i in range(ended)],
        }  # fmt: skip
        view.update(sweep)
        if sweep["state"] != "running":
            break
        clock.t += 2.0
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # a line when a trial ends (20 s apart at most) or once a minute, not one per poll
    assert len(lines) <= clock.t / 60 + trials + 2, len(lines)
    assert lines[-1] == "sweep 3 succeeded"
    assert lines[-2] == (
        "sweep 3: 8/8 trials ended, running 0, queued 0, failed 0, best D_v acc 97.00%"
    )


def test_figures_read_as_people_write_them() -> None:
    assert [duration(s) for s in (0.4, 45, 245, 3725)] == [
        "0 s",
        "45 s",
        "4 min 5 s",
        "1 h 2 min",
    ]
    assert rate_text(25.04, "batch") == "25.0 batch/s"
    assert rate_text(0.25, "epoch") == "4.0 s/epoch"
    assert rate_text(None, "batch") is None and rate_text(0.0, "batch") is None
