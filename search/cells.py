"""A genotype's cells as graphs, as DARTS's ``visualize.py`` draws them: the two inputs
``c_{k-2}`` and ``c_{k-1}``, the intermediate nodes, every kept edge labelled with its operation,
and the output ``c_{k}`` that concatenates the nodes; as text for terminals and as a PNG."""

from __future__ import annotations

from pathlib import Path

from space.genotypes import Edge, Genotype

INPUTS = ("c_{k-2}", "c_{k-1}")
LEARNABLE = {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}


def _name(i: int) -> str:
    return INPUTS[i] if i < 2 else str(i - 2)


def cell_text(edges: tuple[Edge, ...], concat: tuple[int, ...]) -> list[str]:
    lines = []
    for node in range(len(edges) // 2):
        pair = edges[2 * node : 2 * node + 2]
        lines.append(f"  node {node} = " + " + ".join(f"{op}({_name(i)})" for op, i in pair))
    lines.append("  c_{k} = concat(" + ", ".join(_name(i) for i in concat) + ")")
    return lines


def genotype_text(genotype: Genotype) -> str:
    """Both cells, node by node, with the count of learnable operations per cell."""
    out = []
    for kind, edges, concat in (
        ("normal", genotype.normal, genotype.normal_concat),
        ("reduce", genotype.reduce, genotype.reduce_concat),
    ):
        learnable = sum(op in LEARNABLE for op, _ in edges)
        skips = sum(op == "skip_connect" for op, _ in edges)
        out.append(f"{kind} cell ({learnable} of {len(edges)} operations learnable, {skips} skip):")
        out += cell_text(edges, concat)
    return "\n".join(out)


def draw_cells(genotype: Genotype, path: Path, *, title: str = "") -> Path:
    """The normal and the reduction cell side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, (kind, edges, concat) in zip(
        axes,
        (
            ("normal", genotype.normal, genotype.normal_concat),
            ("reduction", genotype.reduce, genotype.reduce_concat),
        ),
        strict=True,
    ):
        steps = len(edges) // 2
        pos = {0: (0.0, 0.75), 1: (0.0, 0.25)}
        for node in range(steps):  # intermediate nodes on a diagonal, left to right
            pos[node + 2] = (1.0 + node, 0.9 - 0.8 * node / max(1, steps - 1))
        out = (steps + 1.2, 0.5)
        for k, (op, i) in enumerate(edges):
            (x0, y0), (x1, y1) = pos[i], pos[k // 2 + 2]
            color = "tab:blue" if op in LEARNABLE else "tab:gray"
            ax.annotate(
                "", xy=(x1, y1), xytext=(x0, y0),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 1.4,
                            "shrinkA": 14, "shrinkB": 14,
                            "connectionstyle": f"arc3,rad={0.12 if k % 2 else -0.12}"},
            )  # fmt: skip
            t = 0.55 if k % 2 else 0.4
            ax.text(
                x0 + t * (x1 - x0), y0 + t * (y1 - y0), op, fontsize=7.5, color=color,
                ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )  # fmt: skip
        for i in concat:
            (x0, y0) = pos[i]
            ax.annotate(
                "", xy=out, xytext=(x0, y0),
                arrowprops={"arrowstyle": "->", "color": "tab:olive", "lw": 0.8, "ls": "--",
                            "shrinkA": 14, "shrinkB": 16},
            )  # fmt: skip
        for n, (x, y) in pos.items():
            ax.text(
                x, y, _name(n), ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "lightgreen" if n < 2 else "lightblue"},
            )  # fmt: skip
        ax.text(*out, "c_{k}", ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "khaki"})  # fmt: skip
        learnable = sum(op in LEARNABLE for op, _ in edges)
        ax.set_title(f"{kind} cell: {learnable} of {len(edges)} operations learnable")
        ax.set_xlim(-0.5, out[0] + 0.5)
        ax.set_ylim(0.0, 1.05)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
