"""ResKD on real data over several seeds: T, S0, S1 = S0 + R1 (R1 smaller than S0), S1 with
sample-adaptive inference, and the two Table II baselines with the same architectures.

    python benchmarks/reskd_seeds.py [--dataset mnist5k] [--seeds 0 1 2] [--out runs/bench-reskd]

Prints mean and standard deviation over the seeds, and whether S1 >= S0 in accuracy and
Energy(S1) > Energy(S0) (on D_v, the quantity Algorithm 1 uses) on average.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from distill.report import format_table
from search.config import RunConfig
from search.pipeline import run


def config(dataset: str, seed: int, epochs: int, teacher_epochs: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "dataset": dataset,
            "augment": False,
            "val_size": 500,
            "teacher": "resnet20",
            "student": {"model": "resnet14", "width": 0.25},
            "res_students": [{"model": "resnet8", "width": 0.25}],
            "kd": {"method": "kd", "distance": "kl", "tau": 0.9, "t": 4.0},
            "ratio": 0.9,
            "max_stages": 1,
            "preset": "cpu-small",
            "train": {"epochs": epochs},
            "teacher_train": {"epochs": teacher_epochs},
            "baselines": ["ensemble", "together"],
            "seed": seed,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--out", default="runs/bench-reskd")
    args = parser.parse_args()

    per_model: dict[str, dict[str, list[float]]] = {}
    arch: dict[str, str] = {}
    for seed in args.seeds:
        result = run(
            config(args.dataset, seed, args.epochs, args.teacher_epochs),
            out_dir=Path(args.out) / f"{args.dataset}-seed{seed}",
            progress=False,
            log=lambda _: None,
        )
        dv = {s["network"]: s["energy_dv"] for s in result.stages if "network" in s}
        for row in (r.to_dict() for r in (x.to_dict() for x in result.rows)):
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

    def ms(values: list[float], digits: int = 4) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"

    rows = []
    for name, m in per_model.items():
        rows.append(
            {
                "model": name,
                "arch": arch[name],
                "accuracy": ms(m["accuracy"]),
                "energy (test)": ms(m["energy"]),
                "energy (D_v)": ms(m["energy_dv"]) if "energy_dv" in m else "-",
                "mflops": f"{statistics.mean(m['mflops']):.3f}",
                "adaptive mflops": f"{statistics.mean(m['adaptive_mflops']):.3f}",
                "l2 to T": ms(m["l2_to_T"], 3),
            }
        )
    print(f"\n{args.dataset}, seeds {args.seeds}, mean ± sd\n")
    print(format_table(rows, list(rows[0])))
    s0, s1 = per_model["S0"], per_model["S1"]
    acc_ok = statistics.mean(s1["accuracy"]) >= statistics.mean(s0["accuracy"])
    energy_ok = statistics.mean(s1["energy_dv"]) > statistics.mean(s0["energy_dv"])
    print(f"\nS1 accuracy >= S0 accuracy (mean): {acc_ok}")
    print(f"Energy(S1, D_v) > Energy(S0, D_v) (mean): {energy_ok}")


if __name__ == "__main__":
    main()
