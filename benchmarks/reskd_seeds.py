"""ResKD on real data over several seeds: T, S0, S1 = S0 + R1 (R1 smaller than S0), S1 with
sample-adaptive inference, and the two Table II baselines with the same architectures.

    python -m benchmarks.reskd_seeds [--dataset mnist5k] [--seeds 0 1 2] [--out runs/bench-reskd]
        [--record FILE]

Prints mean and standard deviation over the seeds, and whether S1 >= S0 in accuracy and
Energy(S1) > Energy(S0) (on D_v, the quantity Algorithm 1 uses) on average.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import (
    add_record_option,
    add_seed_options,
    announce,
    mean_sd,
    reskd_config,
    run_quietly,
    write_record,
)
from distill.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_seed_options(parser, out="runs/bench-reskd")
    add_record_option(parser)
    args = parser.parse_args()
    announce()

    per_model: dict[str, dict[str, list[float]]] = {}
    arch: dict[str, str] = {}
    for seed in args.seeds:
        config = reskd_config(
            args.dataset, seed, epochs=args.epochs, teacher_epochs=args.teacher_epochs
        )
        result = run_quietly(config, Path(args.out) / f"{args.dataset}-seed{seed}")
        dv = {s["network"]: s["energy_dv"] for s in result.stages if "network" in s}
        for row in (r.to_dict() for r in result.rows):
            m = per_model.setdefault(row["model"], {})
            arch[row["model"]] = row["arch"]
            for key in ("accuracy", "energy", "mflops", "adaptive_mflops", "l2_to_T"):
                m.setdefault(key, []).append(row[key])
            if row["model"] in ("S0", "S1"):
                m.setdefault("energy_dv", []).append(dv["S0" if row["model"] == "S0" else "R1"])
        print(
            f"seed {seed}: "
            + ", ".join(
                f"{r['model']} {r['accuracy']:.4f}" for r in (x.to_dict() for x in result.rows)
            ),
            flush=True,
        )

    rows = []
    for name, m in per_model.items():
        rows.append(
            {
                "model": name,
                "arch": arch[name],
                "accuracy": mean_sd(m["accuracy"]),
                "energy (test)": mean_sd(m["energy"]),
                "energy (D_v)": mean_sd(m["energy_dv"]) if "energy_dv" in m else "-",
                "mflops": f"{statistics.mean(m['mflops']):.3f}",
                "adaptive mflops": f"{statistics.mean(m['adaptive_mflops']):.3f}",
                "l2 to T": mean_sd(m["l2_to_T"], 3),
            }
        )
    print(f"\n{args.dataset}, seeds {args.seeds}, mean ± sd\n")
    print(format_table(rows, list(rows[0])))
    s0, s1 = per_model["S0"], per_model["S1"]
    acc_ok = statistics.mean(s1["accuracy"]) >= statistics.mean(s0["accuracy"])
    energy_ok = statistics.mean(s1["energy_dv"]) > statistics.mean(s0["energy_dv"])
    print(f"\nS1 accuracy >= S0 accuracy (mean): {acc_ok}")
    print(f"Energy(S1, D_v) > Energy(S0, D_v) (mean): {energy_ok}")
    if args.record:
        figures = {"dataset": args.dataset, "seeds": args.seeds, "per_model": per_model}
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
