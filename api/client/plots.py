"""Plots of what the service answers: a Pareto front, a sweep's trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_pareto(front: dict[str, Any], everything: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = front["cost"]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(
        [a[cost] for a in everything],
        [100 * a["accuracy"] for a in everything],
        s=18,
        alpha=0.4,
        label="evaluated",
    )
    pts = front["front"]
    ax.plot(
        [a[cost] for a in pts],
        [100 * a["accuracy"] for a in pts],
        "o-",
        color="C3",
        label="Pareto front",
    )
    for a in pts:
        ax.annotate(
            a["stage"],
            (a[cost], 100 * a["accuracy"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel(
        {
            "mflops": "MFLOPs",
            "adaptive_mflops": "MFLOPs with adaptive inference",
            "params": "parameters",
        }[cost]
    )
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"Pareto front: {front.get('dataset') or 'all datasets'}"
        + (f", teacher {front['teacher']}" if front.get("teacher") else "")
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(sweep: dict[str, Any], front: dict[str, Any], path: Path) -> Path:
    """Every complete trial (accuracy of S_n against its cost), the Pareto front, failed trials
    marked on the cost axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = front["cost"]
    done = [t for t in sweep["trial_list"] if t["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(7, 5))
    sc = ax.scatter(
        [t["cost"] for t in done],
        [100 * t["accuracy"] for t in done],
        c=[t["number"] for t in done],
        cmap="viridis",
        s=30,
        label="trials (colour: trial number)",
    )
    fig.colorbar(sc, ax=ax, label="trial")
    pts = front["front"]
    ax.plot(
        [t["cost"] for t in pts],
        [100 * t["accuracy"] for t in pts],
        "o-",
        color="C3",
        mfc="none",
        ms=10,
        label="Pareto front",
    )
    for t in pts:
        budget = t["params"].get("budget_mflops")
        label = f"#{t['number']}" + (f" B={budget:.3g}" if budget is not None else "")
        ax.annotate(
            label,
            (t["cost"], 100 * t["accuracy"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("MFLOPs of S_n" if cost == "mflops" else "MFLOPs of S_n, adaptive inference")
    ax.set_ylabel("test accuracy of S_n (%)")
    failed = sum(t["state"] == "fail" for t in sweep["trial_list"])
    ax.set_title(
        f"sweep {sweep['id']} ({sweep['sampler']}, {sweep['dataset']}): {len(done)} complete"
        + (f", {failed} failed" if failed else "")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
