"""A searched R1 against a handcrafted R1 with the same MFLOPs, on real data, over several seeds.

    python -m benchmarks.search_vs_handcrafted [--dataset mnist5k] [--seeds 0 1 2]
        [--handcrafted resnet8:0.5] [--strategy stacnas] [--out runs/bench-search] [--record FILE]

For each seed, one output directory holds both runs, so the teacher and S0 are trained once and
shared (stage reuse): T ResNet-20, S0 ResNet-14x0.25 by KD, then R1 either the handcrafted
network or a network searched (KD on the residual T - S0) under a budget equal to the handcrafted
R1's counted MFLOPs and fine-tuned from scratch with the same training settings. Prints S1 = S0 +
R1 accuracy per seed, mean and standard deviation, and R1's counted MFLOPs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_record_option,
    add_seed_options,
    announce,
    base_config,
    mean_sd,
    run_quietly,
    write_record,
)
from distill.data import dataset_info
from distill.models import NetSpec, complexity
from distill.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_seed_options(parser, out="runs/bench-search")
    parser.add_argument("--handcrafted", default="resnet8:0.5", help="MODEL:WIDTH of R1")
    parser.add_argument("--strategy", default="stacnas", choices=["stacnas", "darts"])
    parser.add_argument("--search-epochs", type=int, default=4, help="per search stage")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up epochs per search stage")
    parser.add_argument("--max-skips", type=int, help="P-DARTS cap on normal-cell skips")
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--layers", type=int, default=5)
    add_record_option(parser)
    args = parser.parse_args()
    announce()

    model, width = args.handcrafted.split(":")
    info = dataset_info(args.dataset)
    hand_spec = NetSpec.for_dataset(model, info, width=float(width))
    budget = complexity(hand_spec.build(), info).mflops
    print(
        f"handcrafted R1 {hand_spec.label}: {budget:.4f} MFLOPs = the search's budget", flush=True
    )
    arms: dict[str, dict[str, Any]] = {
        "handcrafted": {"model": model, "width": float(width)},
        "searched": {
            "search": {
                "budget_mflops": budget,
                "strategy": args.strategy,
                "epochs": args.search_epochs,
                "channels": args.channels,
                "layers": args.layers,
                "warmup_epochs": args.warmup,
                "max_skips": args.max_skips,
            }
        },
    }
    results: dict[str, dict[str, list[float]]] = {arm: {} for arm in arms}
    r1_archs: dict[str, list[str]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        line = [f"seed {seed}:"]
        for arm, r1 in arms.items():
            config = base_config(
                args.dataset, seed, epochs=args.epochs, teacher_epochs=args.teacher_epochs
            )
            result = run_quietly(
                config | {"res_students": [r1]}, Path(args.out) / f"{args.dataset}-seed{seed}"
            )
            rows = {r.model: r.to_dict() for r in result.rows}
            m = results[arm]
            for name in ("T", "S0", "S1"):
                m.setdefault(f"{name} accuracy", []).append(rows[name]["accuracy"])
            m.setdefault("R1 mflops", []).append(rows["S1"]["mflops"] - rows["S0"]["mflops"])
            r1_archs[arm].append(rows["S1"]["arch"])
            line.append(f"{arm} S1 {rows['S1']['accuracy']:.4f}")
            if result.searches:
                line.append(f"(R1 {result.searches[0]['mflops']:.4f} MFLOPs)")
        line.append(f"S0 {results['handcrafted']['S0 accuracy'][-1]:.4f}")
        print(" ".join(line), flush=True)

    table = [
        {
            "R1": arm,
            "S0 accuracy": mean_sd(m["S0 accuracy"]),
            "S1 accuracy": mean_sd(m["S1 accuracy"]),
            "R1 MFLOPs": mean_sd(m["R1 mflops"], 3),
            "T accuracy": mean_sd(m["T accuracy"]),
        }
        for arm, m in results.items()
    ]
    print()
    print(format_table(table, ["R1", "S1 accuracy", "S0 accuracy", "R1 MFLOPs", "T accuracy"]))
    gain = statistics.mean(results["searched"]["S1 accuracy"]) - statistics.mean(
        results["handcrafted"]["S1 accuracy"]
    )
    print(f"\nsearched - handcrafted S1 accuracy (mean over {len(args.seeds)} seeds): {gain:+.4f}")
    if args.record:
        figures = {"dataset": args.dataset, "seeds": args.seeds, "budget_mflops": budget}
        figures |= {"arms": results, "r1_archs": r1_archs}
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
