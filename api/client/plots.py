"""Plots of what the service answers: a Pareto front, a sweep's trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.numbers import cost_text, mflops, percent

COST_LABELS = {
    "mflops": "MFLOPs",
    "adaptive_mflops": "MFLOPs with sample-adaptive inference",
    "params": "parameters",
}


def pareto_figure(
    front: dict[str, Any], everything: list[dict[str, Any]], teacher: dict[str, Any] | None = None
) -> Any:
    """Every evaluated architecture with a D_v accuracy (hollow, so coinciding points stay
    visible; a number where several coincide), the front as a staircase (what is attainable at a
    cost is the best D_v accuracy at or below it), and the teacher as a reference line. D_v
    accuracy is what the front ranks on; test accuracy is in the listing, not on this axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = front["cost"]
    everything = [a for a in everything if a.get("val_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(
        [a[cost] for a in everything],
        [100 * a["val_accuracy"] for a in everything],
        s=30,
        facecolors="none",
        edgecolors="C0",
        alpha=0.7,
        label="evaluated architectures",
    )
    stacked: dict[tuple[float, float], int] = {}
    for a in everything:
        key = (round(a[cost], 6), round(100 * a["val_accuracy"], 4))
        stacked[key] = stacked.get(key, 0) + 1
    for (x, y), n in stacked.items():
        if n > 1:
            ax.annotate(f"x{n}", (x, y), fontsize=7, color="C0", xytext=(-12, -10),
                        textcoords="offset points")  # fmt: skip
    pts = sorted(front["front"], key=lambda a: a[cost])
    xs, ys = [a[cost] for a in pts], [100 * a["val_accuracy"] for a in pts]
    if xs:
        right = max([a[cost] for a in everything] + xs) * 1.05
        ax.step([*xs, right], [*ys, ys[-1]], where="post", color="C3", label="Pareto front")
        ax.plot(xs, ys, "o", color="C3")
    for a in pts:
        ax.annotate(a["stage"], (a[cost], 100 * a["val_accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    if teacher is not None and teacher.get("val_accuracy") is not None:
        ax.axhline(100 * teacher["val_accuracy"], color="0.4", ls="--", lw=1,
                   label=f"teacher {teacher['arch']}: {percent(teacher['val_accuracy'])} at "
                   f"{cost_text(cost, teacher[cost])} {COST_LABELS[cost]}")  # fmt: skip
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel("D_v accuracy (%)")
    ax.set_title(
        f"Pareto front: {front.get('dataset') or 'all datasets'}"
        + (f", teacher {front['teacher']}" if front.get("teacher") else "")
    )
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.12)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig


def plot_pareto(
    front: dict[str, Any],
    everything: list[dict[str, Any]],
    path: Path,
    teacher: dict[str, Any] | None = None,
) -> Path:
    import matplotlib.pyplot as plt

    fig = pareto_figure(front, everything, teacher)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(sweep: dict[str, Any], front: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = sweep_figure(sweep, front)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_figure(sweep: dict[str, Any], front: dict[str, Any]) -> Any:
    """Every complete trial (D_v accuracy of S_n, the sweep's objective, against its cost),
    numbered; the Pareto front as a staircase with each trial's budget; failed trials counted in
    the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = front["cost"]
    done = [
        t
        for t in sweep["trial_list"]
        if t["state"] == "complete" and t.get("val_accuracy") is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 5))
    on_front = {t["number"] for t in front["front"]}
    behind = [t for t in done if t["number"] not in on_front]
    ax.scatter(
        [t["cost"] for t in behind],
        [100 * t["val_accuracy"] for t in behind],
        s=30,
        color="C0",
        label="dominated trials",
    )
    for t in behind:
        ax.annotate(f"#{t['number']}", (t["cost"], 100 * t["val_accuracy"]), fontsize=7,
                    xytext=(4, -9), textcoords="offset points", color="C0")  # fmt: skip
    pts = sorted(front["front"], key=lambda t: t["cost"])
    if pts:
        xs, ys = [t["cost"] for t in pts], [100 * t["val_accuracy"] for t in pts]
        right = max([t["cost"] for t in done] + xs) * 1.05
        ax.step([*xs, right], [*ys, ys[-1]], where="post", color="C3")
        ax.plot(xs, ys, "o", color="C3", label="Pareto front (non-dominated trials)")
    for t in pts:
        budget = t["params"].get("budget_mflops")
        label = f"#{t['number']}" + (
            f", budget {mflops(budget)} MFLOPs" if budget is not None else ""
        )
        ax.annotate(
            label,
            (t["cost"], 100 * t["val_accuracy"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("MFLOPs of S_n" if cost == "mflops" else "MFLOPs of S_n, adaptive inference")
    ax.set_ylabel("D_v accuracy of S_n (%)")
    failed = sum(t["state"] == "fail" for t in sweep["trial_list"])
    ax.set_title(
        f"sweep {sweep['id']} ({sweep['sampler']}, {sweep['dataset']}): {len(done)} complete"
        + (f", {failed} failed" if failed else "")
    )
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.12)
    ax.legend(loc="best", framealpha=0.9)
    fig.tight_layout()
    return fig
