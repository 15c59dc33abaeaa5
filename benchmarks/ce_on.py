"""Where eq. 3's cross-entropy term goes for a res-student: on S_i = S_{i-1} + R_i (``ce_on:
combined``, the default) or on R_i alone (``residual``, the literal reading the paper presets use).

    python -m benchmarks.ce_on [--dataset mnist5k] [--seeds 0 1 2] [--out runs/bench-ce-on]

Same teacher, S0 and R1 architecture as ``benchmarks.reskd_seeds``, eq. 3 as the paper writes it (L2
between R1 and T - S0, ``residual_target: residual``); per seed the teacher and S0 are trained
once and shared by both settings (S0 has no ``ce_on``), so only R1 differs. Prints S1's test
accuracy (plain and sample-adaptive) per seed and the mean ± sd per setting, and writes the
figures as JSON next to the runs (``OUT/DATASET-ce_on.json``, with the command line).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_seed_options,
    announce,
    mean_sd,
    reskd_config,
    run_quietly,
    write_record,
)
from distill.report import format_table

SETTINGS = ("combined", "residual")


def config(dataset: str, seed: int, ce_on: str, epochs: int, teacher_epochs: int) -> dict[str, Any]:
    """``reskd_seeds``'s run with eq. 3 as the paper writes it and R1 always trained."""
    base = reskd_config(dataset, seed, epochs=epochs, teacher_epochs=teacher_epochs)
    kd = {"distance": "l2", "residual_target": "residual", "ce_on": ce_on}
    # termination off: always train R1 (the comparison is of R1); no baselines
    return base | {"kd": kd, "ratio": None, "baselines": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_seed_options(parser, out="runs/bench-ce-on")
    args = parser.parse_args()
    announce()

    figures: dict[str, dict[str, list[float]]] = {s: {} for s in (*SETTINGS, "S0")}
    for seed in args.seeds:
        stages = Path(args.out) / f"{args.dataset}-seed{seed}" / "stages"  # T and S0 shared
        for ce_on in SETTINGS:
            result = run_quietly(
                config(args.dataset, seed, ce_on, args.epochs, args.teacher_epochs),
                Path(args.out) / f"{args.dataset}-seed{seed}" / ce_on,
                stages_dir=stages,
            )
            rows = {r.model: r for r in result.rows}
            figures[ce_on].setdefault("S1", []).append(100 * rows["S1"].accuracy)
            figures[ce_on].setdefault("S1 adaptive", []).append(100 * rows["S1 adaptive"].accuracy)
            if ce_on == SETTINGS[0]:
                figures["S0"].setdefault("S0", []).append(100 * rows["S0"].accuracy)
            print(
                f"seed {seed} ce_on={ce_on}: S0 {100 * rows['S0'].accuracy:.2f}, "
                f"S1 {100 * rows['S1'].accuracy:.2f}, "
                f"S1 adaptive {100 * rows['S1 adaptive'].accuracy:.2f}",
                flush=True,
            )

    table = [{"ce_on": "(S0)", "S1 %": mean_sd(figures["S0"]["S0"], 2), "S1 adaptive %": "-"}]
    for s in SETTINGS:
        s1, adaptive = figures[s]["S1"], figures[s]["S1 adaptive"]
        table.append({"ce_on": s, "S1 %": mean_sd(s1, 2), "S1 adaptive %": mean_sd(adaptive, 2)})
    print(f"\n{args.dataset}, seeds {args.seeds}, test accuracy mean ± sd\n")
    print(format_table(table, list(table[0])))
    out = Path(args.out) / f"{args.dataset}-ce_on.json"
    write_record(out, {"seeds": args.seeds, "accuracy_pct": figures})
    print(f"\nfigures: {out}")


if __name__ == "__main__":
    main()
