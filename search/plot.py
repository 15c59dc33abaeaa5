"""How the architecture weights moved during a search, as a PNG: per cell type, the mean weight
(softmax, or sigmoid with FairDARTS's weighting) of each operation over the edges by epoch
(STACNAS's two stages side by side), the final weights edge by edge, and the expected MFLOPs
against the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.numbers import mflops
from space.supernet import CELL_KINDS, edge_inputs


def plot_search(history: list[dict[str, Any]], *, budget_mflops: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("plot: the search recorded no epoch")
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), gridspec_kw={"width_ratios": [3, 3, 2]})
    x = list(range(1, len(history) + 1))
    stages = [h.get("stage", "") for h in history]
    boundaries = [k + 0.5 for k in range(1, len(stages)) if stages[k] != stages[k - 1]]
    for row, kind in enumerate(CELL_KINDS):
        ax = axes[row][0]
        ops = sorted({op for h in history for edge in h["probabilities"][kind] for op in edge})
        segments = _segments(stages)
        for n, op in enumerate(ops):
            ys = []
            for h in history:
                values = [edge[op] for edge in h["probabilities"][kind] if op in edge]
                ys.append(sum(values) / len(values) if values else float("nan"))
            color = f"C{n % 10}"
            for s, (lo, hi) in enumerate(segments):  # a line per search stage: candidates differ
                ax.plot(
                    x[lo:hi],
                    ys[lo:hi],
                    marker="o",
                    markersize=3,
                    color=color,
                    label=None if s else op,
                )
        for b in boundaries:
            ax.axvline(b, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{kind} cell: mean weight per operation")
        ax.set_xlabel("epoch" + (" (dashed: next search stage)" if boundaries else ""))
        ax.set_ylabel("architecture weight")
        ax.legend(fontsize=7, loc="upper left")

        ax = axes[row][1]
        final = history[-1]["probabilities"][kind]
        ops = sorted({op for edge in final for op in edge})
        grid = [[edge.get(op, float("nan")) for op in ops] for edge in final]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=7)
        labels = [f"n{j} <- {i}" for j, i in edge_inputs(len(final) and _steps(len(final)))]
        ax.set_yticks(range(len(final)), labels, fontsize=7)
        ax.set_title(
            f"{kind} cell: final weights per edge\n(blank: not a candidate of that edge "
            "in the last stage)",
            fontsize=9,
        )
        fig.colorbar(image, ax=ax, fraction=0.04)

    ax = axes[0][2]
    ax.plot(x, [h["expected_mflops"] for h in history], marker="o", label="E[MFLOPs] (derived)")
    budgets = [h.get("budget_mflops", budget_mflops) for h in history]  # a shallower stage 1's
    scaled = " (stage 1 scaled to its depth)" if len(set(budgets)) > 1 else ""
    label = f"budget {mflops(budget_mflops)}{scaled}"
    ax.step(x, budgets, where="mid", color="red", linestyle="--", label=label)
    for b in boundaries:
        ax.axvline(b, color="grey", linestyle="--", linewidth=1)
    ax.set_title("expected MFLOPs")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    ax = axes[1][2]
    ax.plot(x, [h["loss"] for h in history], marker="o")
    ax.set_title("search loss\n(KD on the residual + FLOPs term)", fontsize=9)
    ax.set_xlabel("epoch")
    for ax in (axes[0][0], axes[1][0], axes[0][2], axes[1][2]):  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _segments(stages: list[str]) -> list[tuple[int, int]]:
    starts = [0] + [k for k in range(1, len(stages)) if stages[k] != stages[k - 1]]
    return list(zip(starts, [*starts[1:], len(stages)], strict=True))


def _steps(n_edges: int) -> int:
    steps, total = 0, 0
    while total < n_edges:
        total += 2 + steps
        steps += 1
    return steps
