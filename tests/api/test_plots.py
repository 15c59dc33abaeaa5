"""What the plots draw (pareto.png drew the front as straight lines between points, hid
coinciding points and left out the teacher; sweep.png coloured trials by a continuous trial
number)."""

from __future__ import annotations

from pathlib import Path

from api.client.plots import pareto_figure, plot_sweep, sweep_figure


def _arch(stage: str, acc: float, mflops: float) -> dict:
    """A stored architecture whose test accuracy differs from its D_v accuracy ``acc``."""
    return {
        "stage": stage, "arch": stage, "val_accuracy": acc, "accuracy": acc - 0.05,
        "mflops": mflops, "job_id": 1,
    }  # fmt: skip


def test_pareto_front_is_a_staircase_with_the_teacher_and_coinciding_points_counted() -> None:
    import matplotlib.pyplot as plt

    front_pts = [_arch("S0", 0.90, 1.0), _arch("S1", 0.95, 2.0)]
    old = _arch("S1", 0.99, 3.5) | {"val_accuracy": None}  # stored before D_v: not drawn
    everything = [*front_pts, _arch("S1", 0.93, 3.0), _arch("S1", 0.93, 3.0), old]
    front = {"cost": "mflops", "front": front_pts, "dataset": "digits", "teacher": "resnet20"}
    fig = pareto_figure(front, everything, teacher=_arch("T", 0.97, 40.0) | {"arch": "resnet20"})
    ax = fig.axes[0]
    steps = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert len(steps) == 1 and list(steps[0].get_ydata())[:2] == [90.0, 95.0]  # D_v, not test
    assert len(ax.collections[0].get_offsets()) == 4
    assert ax.get_ylabel() == "D_v accuracy (%)"
    flat = [line for line in ax.get_lines() if set(line.get_ydata()) == {97.0}]
    assert flat and "teacher resnet20: 97.00%" in ax.get_legend().get_texts()[-1].get_text()
    assert "x2" in [t.get_text() for t in ax.texts]
    plt.close(fig)


def test_sweep_plot_names_its_points_without_a_colour_bar(tmp_path: Path) -> None:
    trials = [
        {"number": n, "state": "complete", "cost": c, "val_accuracy": a, "accuracy": a - 0.1,
         "params": {"budget_mflops": b}}
        for n, c, a, b in [(0, 1.0, 0.9, 0.1), (1, 2.0, 0.95, 0.2), (2, 2.5, 0.92, 0.25)]
    ]  # fmt: skip
    sweep = {"id": 1, "sampler": "nsga2", "dataset": "digits", "trial_list": trials}
    front = {"cost": "mflops", "front": trials[:2]}
    path = plot_sweep(sweep, front, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = sweep_figure(sweep, front)
    assert len(fig.axes) == 1  # no colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "#2" in texts and "#1, budget 0.200 MFLOPs" in texts
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["dominated trials", "Pareto front (non-dominated trials)"]
