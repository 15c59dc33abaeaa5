"""Feature-residual assistant (Gao et al.) against plain feature KD and no KD, same total MFLOPs.

    python -m benchmarks.assistant_seeds [--dataset mnist5k] [--seeds 0 1 2] [--variant integrated]
        [--epochs 6] [--teacher-epochs 8] [--record FILE]

The given student network is split 90/10 into S and A (model separation); the baselines are
Gao et al.'s Table 1 rows on the unseparated network: feature KD of the last feature map (eq. 3)
with the same classifier training, and the network trained on labels alone (no KD). Prints
accuracy mean and standard deviation over seeds, MFLOPs, and S's and A's shares of the
original's MFLOPs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import (
    add_record_option,
    add_seed_options,
    announce,
    mean_sd,
    run_quietly,
    write_record,
)
from distill.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_seed_options(parser, out="runs/bench-assistant")
    parser.add_argument("--student", default="resnet14")
    parser.add_argument(
        "--variant", default="integrated", choices=["plain", "progressive", "integrated"]
    )
    parser.add_argument("--separation", type=float, default=0.9)
    parser.add_argument("--at-weight", type=float, default=0.0)
    add_record_option(parser)
    args = parser.parse_args()
    announce()

    accuracy: dict[str, list[float]] = {}
    mflops: dict[str, float] = {}
    shares: dict[str, float] = {}
    for seed in args.seeds:
        config = {
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
            "baselines": ["plain_student", "feature_kd"],
            "seed": seed,
        }
        result = run_quietly(config, Path(args.out) / f"{args.dataset}-seed{seed}")
        for row in (r.to_dict() for r in result.rows):
            accuracy.setdefault(row["model"], []).append(row["accuracy"])
            mflops[row["model"]] = row["mflops"]
        split = result.extra["separation"]
        shares = {
            part: round(split[f"{part}_mflops"] / split["original_mflops"], 4)
            for part in ("student", "assistant", "total")
        }
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
            "accuracy": mean_sd(acc),
            "mflops": round(mflops[name], 3),
        }
        for name, acc in accuracy.items()
    ]
    print(
        f"\n{args.dataset}, {args.student} split {args.separation:g}, {args.variant}, "
        f"seeds {args.seeds}, mean ± sd\n"
    )
    print(format_table(rows, ["model", "accuracy", "mflops"]))
    print(
        f"separation: S {100 * shares['student']:.2f}% + A {100 * shares['assistant']:.2f}% = "
        f"{100 * shares['total']:.2f}% of the original's MFLOPs"
    )
    if args.record:
        figures = {
            "seeds": args.seeds,
            "accuracy": accuracy,
            "mflops": mflops,
            "separation_shares": shares,
        }
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
