"""Feature-residual assistant (Gao et al.) against plain feature KD, same total MFLOPs.

    python benchmarks/assistant_seeds.py [--dataset mnist5k] [--seeds 0 1 2] [--variant integrated]

The given student network is split 90/10 into S and A (model separation); the baseline is the
unseparated network trained with plain feature KD of the last feature map (eq. 3) and the same
classifier training. Prints accuracy mean and standard deviation over seeds, and MFLOPs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from distill.report import format_table
from search.config import RunConfig
from search.pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--student", default="resnet14")
    parser.add_argument(
        "--variant", default="integrated", choices=["plain", "progressive", "integrated"]
    )
    parser.add_argument("--separation", type=float, default=0.9)
    parser.add_argument("--at-weight", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--out", default="runs/bench-assistant")
    args = parser.parse_args()

    accuracy: dict[str, list[float]] = {}
    mflops: dict[str, float] = {}
    for seed in args.seeds:
        config = RunConfig.from_dict(
            {
                "method": "assistant",
                "dataset": args.dataset,
                "augment": False,
                "teacher": "resnet20",
                "student": args.student,
                "assistant": {
                    "variant": args.variant,
                    "separation": args.separation,
                    "at_weight": args.at_weight,
                },
                "preset": "cpu-small",
                "train": {"epochs": args.epochs},
                "teacher_train": {"epochs": args.teacher_epochs},
                "baselines": ["feature_kd"],
                "seed": seed,
            }
        )
        result = run(
            config,
            out_dir=Path(args.out) / f"{args.dataset}-seed{seed}",
            progress=False,
            log=lambda _: None,
        )
        for row in (r.to_dict() for r in (x.to_dict() for x in result.rows)):
            accuracy.setdefault(row["model"], []).append(row["accuracy"])
            mflops[row["model"]] = row["mflops"]
        print(
            f"seed {seed}: "
            + ", ".join(
                f"{r['model']} {r['accuracy']:.4f}" for r in (x.to_dict() for x in result.rows)
            ),
            flush=True,
        )

    rows = [
        {
            "model": name,
            "accuracy": f"{statistics.mean(acc):.4f} ± "
            f"{statistics.stdev(acc) if len(acc) > 1 else 0.0:.4f}",
            "mflops": round(mflops[name], 3),
        }
        for name, acc in accuracy.items()
    ]
    print(
        f"\n{args.dataset}, {args.student} split {args.separation:g}, {args.variant}, "
        f"seeds {args.seeds}, mean ± sd\n"
    )
    print(format_table(rows, ["model", "accuracy", "mflops"]))


if __name__ == "__main__":
    main()
