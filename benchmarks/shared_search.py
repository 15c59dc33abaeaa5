"""Does searching once per sweep cost the front anything? A budget sweep's R1 at eight budgets,
searched per trial against derived from one shared supernet (at the largest budget's FLOPs term,
or budget-free), over several seeds; every R1 fine-tuned the same way once chosen.

    python -m benchmarks.shared_search [--dataset mnist5k] [--seeds 0 1 2]
        [--factors 0.5 0.61 0.74 0.9 1.1 1.35 1.64 2] [--arms per-trial largest free]
        [--epochs 4] [--teacher-epochs 8] [--set epochs=2 [--set KEY=VALUE ...]]
        [--out runs/bench-shared-search] [--record docs/shared_search.json]

Per seed, one directory holds every run, so T and S0 (``benchmarks.common.base_config``) train
once, before the arms (a run with a handcrafted R1), and every arm reuses them: an arm's minutes
are what its sweep would take with T and S0 stored, as a service's sweeps have them. Budgets are
multiples of ResNet-8x0.5's counted MFLOPs on the dataset. The arms:

- ``per-trial``: each budget searches on its own (``shared_search: off``);
- ``largest``: one supernet searched under the FLOPs term at the largest budget, each budget
  derived from its architecture weights with the budget repair (a sweep's default);
- ``free``: the same, the supernet searched without any FLOPs term.

Prints, per arm, its minutes and CPU minutes (the sums over its eight runs, mean ± sd over
seeds; CPU minutes are this process's, what the runs cost whatever else the cores did) and its
front's hypervolume on D_v and on the test set (S1 accuracy against R1 MFLOPs, over S0's
accuracy and 1.1x the largest budget, mean ± sd over seeds), writes the records and
``shared_search.png`` (each arm's mean front on D_v and test).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_allocator_option,
    add_record_option,
    add_set_option,
    announce,
    base_config,
    mean_sd,
    preload_allocator,
    run_quietly,
    search_spec,
    write_record,
)
from benchmarks.search_quality import hypervolume
from distill.data import dataset_info
from distill.models import NetSpec, complexity

ARMS = ("per-trial", "largest", "free")
FACTORS = (0.5, 0.61, 0.74, 0.9, 1.1, 1.35, 1.64, 2.0)


def r1_of(arm: str, spec: dict[str, Any], largest: float) -> dict[str, Any]:
    """The searched R1 of ``arm`` (``spec``: the search at this trial's budget)."""
    if arm == "per-trial":
        return {"search": spec}
    shared = {"supernet_budget_mflops": largest, "supernet_budget_term": arm == "largest"}
    return {"search": spec | shared}


def run_arm(
    arm: str, base: dict[str, Any], budgets: list[float], seed: int, sets: list[str], out: Path
) -> list[dict[str, Any]]:
    """The arm's eight runs, in the order a sweep would ask them (the largest last: nothing
    favours a shared arm by searching its supernet's own budget first)."""
    records = []
    for budget in budgets:
        spec = search_spec(budget, seed, sets).to_dict()
        started, cpu = time.perf_counter(), time.process_time()
        report = run_quietly(base | {"res_students": [r1_of(arm, spec, max(budgets))]}, out)
        rows = {r.model: r for r in report.rows}
        found = report.searches[0]
        records.append(
            {
                "seed": seed,
                "arm": arm,
                "budget": budget,
                "s0": rows["S0"].accuracy,
                "s0_val": rows["S0"].val_accuracy,
                "s1": rows["S1"].accuracy,
                "s1_val": rows["S1"].val_accuracy,
                "r1_mflops": rows["S1"].mflops - rows["S0"].mflops,
                "derived_from": found.get("derived_from"),
                "seconds": time.perf_counter() - started,
                # CPU seconds of this process (its training threads): what a run costs, whatever
                # else the machine's cores are doing meanwhile
                "cpu_seconds": time.process_time() - cpu,
            }
        )
        r = records[-1]
        print(
            f"seed {seed} {arm:9s} budget {budget:.4f}: S1 D_v {r['s1_val']:.4f} test "
            f"{r['s1']:.4f}, R1 {r['r1_mflops']:.4f} MFLOPs, {r['seconds']:.0f} s "
            f"({r['cpu_seconds']:.0f} CPU s)",
            flush=True,
        )
    return records


def summarize(records: list[dict[str, Any]], budgets: list[float]) -> dict[str, Any]:
    """Per arm: minutes and both hypervolumes, mean ± sd over seeds; the speed-up of each shared
    arm against per-trial search."""
    ref = 1.1 * max(budgets)
    out: dict[str, Any] = {}
    for arm in sorted({r["arm"] for r in records}, key=ARMS.index):
        per_seed = []
        for seed in sorted({r["seed"] for r in records if r["arm"] == arm}):
            rows = [r for r in records if r["arm"] == arm and r["seed"] == seed]
            per_seed.append(
                {
                    "minutes": sum(r["seconds"] for r in rows) / 60,
                    "cpu_minutes": sum(r["cpu_seconds"] for r in rows) / 60,
                    "hv_val": hypervolume(
                        [(r["r1_mflops"], r["s1_val"]) for r in rows], ref, rows[0]["s0_val"]
                    ),
                    "hv_test": hypervolume(
                        [(r["r1_mflops"], r["s1"]) for r in rows], ref, rows[0]["s0"]
                    ),
                }
            )
        keys = ("minutes", "cpu_minutes", "hv_val", "hv_test")
        out[arm] = {key: [s[key] for s in per_seed] for key in keys}
    if "per-trial" in out:
        alone = statistics.mean(out["per-trial"]["minutes"])
        alone_cpu = statistics.mean(out["per-trial"]["cpu_minutes"])
        for figures in out.values():
            figures["speedup"] = alone / statistics.mean(figures["minutes"])
            figures["cpu_speedup"] = alone_cpu / statistics.mean(figures["cpu_minutes"])
    return out


def print_table(summary: dict[str, Any]) -> None:
    print(
        f"\n{'arm':10s} {'minutes':>13s} {'x':>6s} {'CPU minutes':>13s} {'x':>6s} "
        f"{'HV on D_v':>17s} {'HV on test':>17s}"
    )
    for arm, f in summary.items():
        print(
            f"{arm:10s} {mean_sd(f['minutes'], 1):>13s} {f.get('speedup', 1.0):>5.2f}x "
            f"{mean_sd(f['cpu_minutes'], 1):>13s} {f.get('cpu_speedup', 1.0):>5.2f}x "
            f"{mean_sd(f['hv_val'], 4):>17s} {mean_sd(f['hv_test'], 4):>17s}"
        )


def plot(records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, title in ((axes[0], "s1_val", "on D_v"), (axes[1], "s1", "on the test set")):
        for arm in ARMS:
            rows = [r for r in records if r["arm"] == arm]
            if not rows:
                continue
            budgets = sorted({r["budget"] for r in rows})
            at = [[r for r in rows if r["budget"] == b] for b in budgets]
            xs = [statistics.mean(r["r1_mflops"] for r in same) for same in at]
            ys = [100 * statistics.mean(r[key] for r in same) for same in at]
            ax.plot(xs, ys, marker="o", label=arm)
        ax.set_title(f"S1 accuracy {title} (mean over seeds)")
        ax.set_xlabel("R1 MFLOPs")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--factors", type=float, nargs="+", default=list(FACTORS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--epochs", type=int, default=4, help="S0 and R1 training epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    add_set_option(parser, "the search spec")
    parser.add_argument("--out", default="runs/bench-shared-search")
    add_record_option(parser)
    add_allocator_option(parser)
    args = parser.parse_args()
    preload_allocator(args.allocator)
    announce()
    info = dataset_info(args.dataset)
    unit = complexity(NetSpec.for_dataset("resnet8", info, width=0.5).build(), info).mflops
    budgets = [round(f * unit, 4) for f in args.factors]
    print(f"ResNet-8x0.5 on {args.dataset}: {unit:.4f} MFLOPs; budgets {budgets}", flush=True)
    records: list[dict[str, Any]] = []
    for seed in args.seeds:
        base = base_config(
            args.dataset, seed, epochs=args.epochs, teacher_epochs=args.teacher_epochs
        ) | {"ratio": None}
        directory = Path(args.out) / f"{args.dataset}-seed{seed}"
        run_quietly(base | {"res_students": [{"model": "resnet8", "width": 0.25}]}, directory)
        for arm in args.arms:  # each in its own store, with T and S0 copied in: no arm reuses
            # another's search (the largest budget's per-trial search is the shared supernet)
            records += run_arm(arm, base, budgets, seed, args.set, given(directory, arm))
        report(records, budgets, args)  # after every seed: a long run leaves what it measured


def given(directory: Path, arm: str) -> Path:
    """A store for ``arm`` holding the stored T, its gate and S0 of ``directory``."""
    store = directory / arm
    for stage in (*directory.glob("teacher-*"), *directory.glob("gate-*"),
                  *directory.glob("student-*")):  # fmt: skip
        if not (store / stage.name).exists():
            shutil.copytree(stage, store / stage.name)
    return store


def report(records: list[dict[str, Any]], budgets: list[float], args: argparse.Namespace) -> None:
    summary = summarize(records, budgets)
    print_table(summary)
    figure = plot(records, Path(args.out) / "shared_search.png")
    print(f"\nplot: {figure}")
    if args.record:
        write_record(
            args.record,
            {"dataset": args.dataset, "budgets": budgets, "summary": summary, "records": records},
        )
        print(f"record: {args.record}")


if __name__ == "__main__":
    main()
