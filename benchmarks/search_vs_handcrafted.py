"""A searched R1 against a handcrafted R1 with the same MFLOPs, on real data, over several seeds.

    python benchmarks/search_vs_handcrafted.py [--dataset mnist5k] [--seeds 0 1 2]
        [--handcrafted resnet8:0.5] [--strategy stacnas] [--out runs/bench-search]

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

from distill.data import dataset_info
from distill.models import NetSpec, complexity
from distill.report import format_table
from search.config import RunConfig
from search.pipeline import run


def config(
    dataset: str, seed: int, epochs: int, r1: dict[str, Any], teacher_epochs: int
) -> RunConfig:
    return RunConfig.from_dict(
        {
            "dataset": dataset,
            "augment": False,
            "val_size": 500,
            "teacher": "resnet20",
            "student": {"model": "resnet14", "width": 0.25},
            "res_students": [r1],
            "kd": {"method": "kd", "distance": "kl", "tau": 0.9, "t": 4.0},
            "max_stages": 1,
            "preset": "cpu-small",
            "train": {"epochs": epochs},
            "teacher_train": {"epochs": teacher_epochs},
            "seed": seed,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6, help="S0 and R1 training epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--handcrafted", default="resnet8:0.5", help="MODEL:WIDTH of R1")
    parser.add_argument("--strategy", default="stacnas", choices=["stacnas", "darts"])
    parser.add_argument("--search-epochs", type=int, default=4, help="per search stage")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up epochs per search stage")
    parser.add_argument("--max-skips", type=int, help="P-DARTS cap on normal-cell skips")
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--out", default="runs/bench-search")
    args = parser.parse_args()

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
    for seed in args.seeds:
        line = [f"seed {seed}:"]
        for arm, r1 in arms.items():
            result = run(
                config(args.dataset, seed, args.epochs, r1, args.teacher_epochs),
                out_dir=Path(args.out) / f"{args.dataset}-seed{seed}",
                progress=False,
                log=lambda _: None,
            )
            rows = {r.model: r.to_dict() for r in result.rows}
            m = results[arm]
            for name in ("T", "S0", "S1"):
                m.setdefault(f"{name} accuracy", []).append(rows[name]["accuracy"])
            m.setdefault("R1 mflops", []).append(rows["S1"]["mflops"] - rows["S0"]["mflops"])
            m.setdefault("R1 arch", []).append(rows["S1"]["arch"])  # type: ignore[arg-type]
            line.append(f"{arm} S1 {rows['S1']['accuracy']:.4f}")
            if result.searches:
                line.append(f"(R1 {result.searches[0]['mflops']:.4f} MFLOPs)")
        line.append(f"S0 {results['handcrafted']['S0 accuracy'][-1]:.4f}")
        print(" ".join(line), flush=True)

    def ms(values: list[float], digits: int = 4) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"

    rows = [
        {
            "R1": arm,
            "S0 accuracy": ms(m["S0 accuracy"]),
            "S1 accuracy": ms(m["S1 accuracy"]),
            "R1 MFLOPs": ms(m["R1 mflops"], 3),
            "T accuracy": ms(m["T accuracy"]),
        }
        for arm, m in results.items()
    ]
    print()
    print(format_table(rows, ["R1", "S1 accuracy", "S0 accuracy", "R1 MFLOPs", "T accuracy"]))
    gain = statistics.mean(results["searched"]["S1 accuracy"]) - statistics.mean(
        results["handcrafted"]["S1 accuracy"]
    )
    print(f"\nsearched - handcrafted S1 accuracy (mean over {len(args.seeds)} seeds): {gain:+.4f}")


if __name__ == "__main__":
    main()
