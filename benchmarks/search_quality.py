"""Does the search find better res-students than a person or a dice would? Searched, handcrafted and
random R1 at three FLOPs budgets over several seeds, every R1 trained the same way once chosen.

    python -m benchmarks.search_quality [--dataset mnist5k] [--root DIR] [--device auto]
        [--seeds 0 1 2] [--budgets 0.5 1 2] [--random 3] [--set epochs=4 [--set KEY=VALUE ...]]
        [--shared-student [--augment]] [--out runs/bench-quality]

Per seed, one output directory holds every run, so S0 (ResNet-14x0.25 by KD, as in
``benchmarks.reskd_seeds``) is trained once and shared by the arms; T (ResNet-20) is trained
with the first seed and serves every seed (``--teacher-per-seed`` trains one per seed).
``--shared-student``: the teacher seed's S0 serves every seed as well (loaded through the run
config's ``student_checkpoint``), so that the seeds vary only what the arms differ by, the search
and R1's training, as they do for a user whose T and S0 are given; S0's own seed-to-seed spread
(0.35 points sd over 5 seeds) then no longer enters every arm's standard error. Every R1
trains with its gradients clipped at 5 (searched and random genotypes do under ``nas_train``).
``--augment`` (with ``--shared-student``, T and S0 taken from ``OUT/teacher.pt`` and ``student.pt``
as trained without it): the search and every R1 train on random shifts of the images (what it
does to the architectures' spread: ``python -m benchmarks.architecture_spread --augment``).
``--dataset cifar10`` (or ``cifar100``) with ``--root DIR`` (torchvision's files; nothing is
downloaded) and, on a GPU box, ``--device cuda`` and longer ``--epochs``/``--teacher-epochs``/
``--set epochs=N``: a task where R1 has more to close between S0 and T than on MNIST 5k's 1,000
test images; there every stage, T and S0 included, trains on CIFAR's augmentation.
Budgets are multiples of ResNet-8x0.5's counted MFLOPs on the dataset. At each budget and seed,
R1 is
- searched: the default search (``SearchSpec`` defaults, changed by ``--set KEY=VALUE`` as the CLI's
  ``--set`` changes a config: a YAML value at a dotted key, repeatable) on the residual;
- handcrafted: the zoo's ResNet-8 at the widest width (a multiple of 1/32) that fits the budget;
- random: ``--random`` genotypes drawn uniformly from the same space (every edge's operation and
  every node's two inputs uniform, as random architecture weights give them) and brought under the
  budget by the search's own repair (``search.budget.derive_within_budget``) — the sanity check of
  Li and Talwalkar (2019).
Every R1 is then trained from scratch with the same settings (``train``) on T - S0.

Runs under the allocator the service's CPU workers preload (``--allocator auto``: tcmalloc when
installed; it changes no result, only the search minutes), so the minutes are a job's.

Prints a table (S1 accuracy mean ± sd, R1 MFLOPs, search minutes, the searched normal cell's skip
count) and each arm's hypervolume (over S0's accuracy and 1.1x the largest budget), writes
``quality.json`` (the records, with the command line that reproduces them) and ``quality.png`` (the
three fronts with error bars) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from scipy.stats import t as t_dist

from benchmarks.common import (
    DATASETS,
    add_allocator_option,
    add_data_options,
    add_set_option,
    announce,
    base_config,
    check_data_options,
    mean_sd,
    preload_allocator,
    quality_setting,
    random_genotypes,
    run_quietly,
    search_spec,
    stored_weights,
    write_record,
)
from distill.data import dataset_info
from distill.models import NetSpec, complexity
from distill.report import format_table
from space.genotypes import Genotype

ARMS = ("searched", "handcrafted", "random")


def widest_resnet8(info: Any, budget: float) -> tuple[float, float]:
    """The widest ResNet-8 (width a multiple of 1/32) within ``budget`` MFLOPs, and its MFLOPs."""
    best = (0.0, 0.0)
    for k in range(1, 129):
        width = k / 32
        mflops = complexity(NetSpec.for_dataset("resnet8", info, width=width).build(), info).mflops
        if mflops > budget:
            break
        best = (width, mflops)
    if best[0] == 0:
        raise SystemExit(f"no ResNet-8 fits {budget:.4f} MFLOPs")
    return best


def share_stage(directory: Path, kind: str, out: Path) -> Path:
    """The first seed's trained T or S0 (``kind``: teacher, student) as a plain state dict (what
    ``teacher_checkpoint`` and ``student_checkpoint`` load), at ``OUT/<kind>.pt``."""
    import torch

    weights = stored_weights(directory, kind)
    path = out / f"{kind}.pt"
    torch.save(torch.load(weights, map_location="cpu", weights_only=True)["model"], path)
    return path


def normal_skips(genotype: dict[str, Any]) -> int:
    return sum(1 for op, _ in Genotype.from_dict(genotype).normal if op == "skip_connect")


def normal_parameter_free(genotype: dict[str, Any]) -> int:
    """Skips and poolings in the normal cell: a collapse to pooling is a collapse too."""
    return sum(
        1 for op, _ in Genotype.from_dict(genotype).normal if op == "skip_connect" or "pool" in op
    )


def hypervolume(points: list[tuple[float, float]], ref_mflops: float, ref_acc: float) -> float:
    """Area dominated by ``(mflops, accuracy)`` points (fewer MFLOPs, more accuracy) up to the
    reference point, in accuracy x MFLOPs."""
    front = sorted((m, a) for m, a in points if m < ref_mflops and a > ref_acc)
    area, best = 0.0, ref_acc
    for i, (m, a) in enumerate(front):
        best = max(best, a)
        right = front[i + 1][0] if i + 1 < len(front) else ref_mflops
        area += (right - m) * (best - ref_acc)
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k", choices=DATASETS)
    add_data_options(parser)
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="none: only summarize --include"
    )
    parser.add_argument(
        "--include",
        nargs="*",
        default=[],
        help="quality.json files of earlier runs (e.g. other seeds) summarized with this one's; "
        "this run's record wins for the same seed, budget and arm",
    )
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--random", type=int, default=3, help="random genotypes per budget/seed")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--epochs", type=int, default=6, help="S0 and R1 training epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    add_set_option(parser, "the search spec")
    parser.add_argument("--out", default="runs/bench-quality")
    parser.add_argument(
        "--teacher-per-seed",
        action="store_true",
        help="train T for every seed (default: the first seed's T serves every seed, so the "
        "seeds vary what is measured, S0 and R1, and T's 8 epochs are paid once)",
    )
    parser.add_argument(
        "--teacher-seed",
        type=int,
        default=0,
        help="the seed whose T serves the others: it trains it (a later run with other seeds "
        "only reuses OUT/teacher.pt)",
    )
    parser.add_argument(
        "--shared-student",
        action="store_true",
        help="the teacher seed's S0 serves every seed too (default: S0 per seed)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="the search and every R1 train on random shifts (pad 2, crop); T and S0 are the "
        "ones in OUT (teacher.pt, student.pt, trained without): needs --shared-student",
    )
    add_allocator_option(parser)
    args = parser.parse_args()
    check_data_options(args)
    preload_allocator(args.allocator)
    announce()

    info = dataset_info(args.dataset)
    unit = complexity(NetSpec.for_dataset("resnet8", info, width=0.5).build(), info).mflops
    out = Path(args.out)
    print(f"ResNet-8x0.5 on {args.dataset}: {unit:.4f} MFLOPs; budgets x{args.budgets}", flush=True)
    records: list[dict[str, Any]] = []
    shared_teacher: Path | None = None
    shared_student: Path | None = None
    if args.shared_student and args.teacher_per_seed:
        raise SystemExit("--shared-student: needs one T for every seed (not --teacher-per-seed)")
    if args.augment:
        if not args.shared_student:
            raise SystemExit("--augment: needs --shared-student (T and S0 given, not retrained)")
        for name in ("teacher.pt", "student.pt"):
            if not (out / name).exists():
                raise SystemExit(
                    f"--augment: no {out / name}; run the benchmark into {out} without "
                    "--augment first, or copy an earlier run's teacher.pt and student.pt there"
                )
        shared_teacher, shared_student = out / "teacher.pt", out / "student.pt"
    seeds = list(args.seeds)
    if args.shared_student and args.teacher_seed in seeds:  # its S0 first, then the others
        seeds.remove(args.teacher_seed)
        seeds.insert(0, args.teacher_seed)
    for seed in seeds:
        later = seed != args.teacher_seed and not args.teacher_per_seed
        if later and shared_teacher is None and (out / "teacher.pt").exists():
            shared_teacher = out / "teacher.pt"  # an earlier run's (e.g. more seeds added later)
        if later and args.shared_student and shared_student is None:
            if not (out / "student.pt").exists():
                raise SystemExit(
                    f"--shared-student: no {out / 'student.pt'}; run the teacher seed "
                    f"({args.teacher_seed}) first"
                )
            shared_student = out / "student.pt"
        base = quality_setting(
            base_config(
                args.dataset, seed, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                root=args.root, device=args.device, val_size=args.val_size,
            )
        )  # fmt: skip
        base["augment"] = base["augment"] or args.augment
        if shared_teacher is not None:
            base["teacher_checkpoint"] = str(shared_teacher)
        if shared_student is not None:
            base["student_checkpoint"] = str(shared_student)
        directory = out / f"{args.dataset}-seed{seed}"
        for factor in args.budgets:
            budget = round(factor * unit, 4)
            spec = search_spec(budget, seed, args.set)
            arms: list[tuple[str, dict[str, Any]]] = []
            if "searched" in args.arms:
                arms.append(("searched", {"search": spec.to_dict()}))
            if "handcrafted" in args.arms:
                width, _ = widest_resnet8(info, budget)
                arms.append(("handcrafted", {"model": "resnet8", "width": width}))
            if "random" in args.arms:
                for d in random_genotypes(spec, info, factor=factor, count=args.random):
                    drawn = {"genotype": d.genotype.to_dict(), "channels": d.channels}
                    arms.append(("random", drawn | {"layers": spec.layers}))
            for arm, r1 in arms:
                started = time.perf_counter()
                report = run_quietly(base | {"res_students": [r1]}, directory)
                rows = {r.model: r for r in report.rows}
                search = report.searches[0] if report.searches else None
                found = {}
                if search is not None:
                    found = json.loads((Path(search["directory"]) / "search.json").read_text())
                record = {
                    "seed": seed,
                    "factor": factor,
                    "budget": budget,
                    "arm": arm,
                    "s0": rows["S0"].accuracy,
                    "s0_seed": args.teacher_seed if args.shared_student else seed,
                    "s1": rows["S1"].accuracy,
                    "r1_mflops": rows["S1"].mflops - rows["S0"].mflops,
                    "arch": rows["S1"].arch,
                    "search_seconds": found.get("seconds", 0.0),
                    "normal_skips": normal_skips(r1["genotype"])
                    if arm == "random"
                    else (normal_skips(found["genotype"]) if found else None),
                    "argmax_skips": normal_skips(found["argmax_genotype"]) if found else None,
                    "normal_parameter_free": normal_parameter_free(
                        r1["genotype"] if arm == "random" else found["genotype"]
                    )
                    if (arm == "random" or found)
                    else None,
                    "repair": found.get("derivation", {}).get("repair"),
                    "seconds": time.perf_counter() - started,
                }
                records.append(record)
                if shared_teacher is None and not args.teacher_per_seed:
                    shared_teacher = share_stage(directory, "teacher", out)
                    if seed != args.teacher_seed:
                        print(f"T of seed {seed} serves the others (--teacher-seed {seed})")
                if args.shared_student and shared_student is None:
                    shared_student = share_stage(directory, "student", out)
                    print(f"S0 of seed {seed} ({record['s0']:.4f}) serves every seed")
                print(
                    f"seed {seed} x{factor} {arm:11s} S1 {record['s1']:.4f} (S0 {record['s0']:.4f})"
                    f" R1 {record['r1_mflops']:.4f} MFLOPs"
                    + (f", search {record['search_seconds'] / 60:.1f} min" if found else "")
                    + (
                        f", normal skips {record['normal_skips']} (argmax {record['argmax_skips']})"
                        f", parameter-free {record['normal_parameter_free']} of 8"
                        if found
                        else ""
                    ),
                    flush=True,
                )
    ran = {(r["seed"], r["factor"], r["arm"]) for r in records}
    for path in args.include:
        earlier = json.loads(Path(path).read_text())["records"]
        records += [r for r in earlier if (r["seed"], r["factor"], r["arm"]) not in ran]
    summarize(records, args.budgets, unit, out)


def summarize(records: list[dict[str, Any]], factors: list[float], unit: float, out: Path) -> None:
    rows: list[dict[str, Any]] = []
    fronts: dict[str, list[Any]] = {}
    s0 = statistics.mean(r["s0"] for r in records)
    ref_mflops = 1.1 * max(factors) * unit
    for factor in factors:
        for arm in ARMS:
            sel = [r for r in records if r["factor"] == factor and r["arm"] == arm]
            if not sel:
                continue
            # random: one mean per seed first (its genotypes are draws of one arm)
            per_seed: dict[int, list[float]] = {}
            for r in sel:
                per_seed.setdefault(r["seed"], []).append(r["s1"])
            accs = (
                [statistics.mean(v) for v in per_seed.values()]
                if arm == "random"
                else [r["s1"] for r in sel]
            )
            every = [r["s1"] for r in sel]
            mflops = statistics.mean(r["r1_mflops"] for r in sel)
            search = [r["search_seconds"] / 60 for r in sel if r["search_seconds"]]
            skips = [r["normal_skips"] for r in sel if r["normal_skips"] is not None]
            rows.append(
                {
                    "budget": f"x{factor} ({factor * unit:.3f})",
                    "R1": arm,
                    "S1 accuracy": mean_sd(every),
                    "n": len(every),
                    "R1 MFLOPs": f"{mflops:.3f}",
                    "search min": f"{statistics.mean(search):.1f}" if search else "-",
                    "normal skips": f"{statistics.mean(skips):.1f}" if skips else "-",
                }
            )
            # the standard error is over seeds (random: its per-seed means), whose S0 it shares
            fronts.setdefault(arm, []).append(
                (factor, mflops, statistics.mean(every), _se(accs), accs)
            )
    s0_seeds = {r.get("s0_seed", r["seed"]) for r in records}
    shared = len(s0_seeds) == 1 and len({r["seed"] for r in records}) > 1
    print()
    print(format_table(rows, list(rows[0])))
    print(
        f"\nS0 accuracy (mean): {s0:.4f}" + (f", one S0 (seed {min(s0_seeds)}'s)" if shared else "")
    )
    volumes = {
        arm: hypervolume([(m, a) for _, m, a, _, _ in pts], ref_mflops, s0)
        for arm, pts in fronts.items()
    }
    print(
        "hypervolume over (S0 accuracy, 1.1x the largest budget), accuracy x MFLOPs: "
        + ", ".join(f"{arm} {v:.5f}" for arm, v in volumes.items())
    )
    verdicts = []
    pooled: dict[str, dict[str, float] | None] = {}
    if "searched" in fronts:
        wins = strong = 0
        for i, (factor, _, acc, se, _) in enumerate(fronts["searched"]):
            others = [fronts[a][i] for a in ("handcrafted", "random") if a in fronts]
            if others and all(acc > o[2] for o in others):
                wins += 1
                if all(acc - o[2] > math.hypot(se, o[3]) for o in others):
                    strong += 1
            verdicts.append(
                f"x{factor}: searched {acc:.4f}"
                + "".join(
                    f", {a} {fronts[a][i][2]:.4f} (diff {acc - fronts[a][i][2]:+.4f}, "
                    f"pooled SE {math.hypot(se, fronts[a][i][3]):.4f})"
                    for a in ("handcrafted", "random")
                    if a in fronts
                )
            )
        print("\n".join(verdicts))
        print(
            f"searched above both means at {wins}/{len(factors)} budgets, "
            f"by more than the pooled standard error at {strong}/{len(factors)}"
        )
        print("paired by seed (the arms of a seed share its S0): searched - other, mean ± SE")
        for factor in factors:
            print(f"x{factor}: " + "; ".join(paired(records, factor, a) for a in ARMS[1:]))
        pooled = {a: pooled_paired(records, factors, a) for a in ARMS[1:]}
        if len(factors) > 1 and any(pooled.values()):
            print(
                "over all budgets, paired by budget and seed: "
                + "; ".join(
                    f"{a} {v['mean']:+.4f} ± {v['se']:.4f} ({v['n']:.0f} pairs, t = {v['t']:.2f}, "
                    f"one-sided p = {v['p']:.3f})"
                    for a, v in pooled.items()
                    if v
                )
            )
    out.mkdir(parents=True, exist_ok=True)
    write_record(
        out / "quality.json",
        {"records": records, "hypervolume": volumes, "rows": rows, "pooled_paired": pooled},
    )
    plot(fronts, s0, volumes, out / "quality.png", shared)
    print(f"\nwrote {out / 'quality.json'} and {out / 'quality.png'}")


def paired_diffs(records: list[dict[str, Any]], factor: float, other: str) -> list[float]:
    """Searched minus ``other`` (its per-seed mean) at one budget, one per seed that has both."""
    by_seed: dict[str, dict[int, list[float]]] = {"searched": {}, other: {}}
    for r in records:
        if r["factor"] == factor and r["arm"] in by_seed:
            by_seed[r["arm"]].setdefault(r["seed"], []).append(r["s1"])
    seeds = sorted(set(by_seed["searched"]) & set(by_seed[other]))
    return [
        statistics.mean(by_seed["searched"][s]) - statistics.mean(by_seed[other][s]) for s in seeds
    ]


def paired(records: list[dict[str, Any]], factor: float, other: str) -> str:
    """Searched minus ``other`` (its per-seed mean) over the seeds that have both."""
    diffs = paired_diffs(records, factor, other)
    if not diffs:
        return f"{other}: no common seed"
    return f"{other} {statistics.mean(diffs):+.4f} ± {_se(diffs):.4f} ({len(diffs)} seeds)"


def pooled_paired(
    records: list[dict[str, Any]], factors: list[float], other: str
) -> dict[str, float] | None:
    """Searched minus ``other`` over every (budget, seed) pair: the mean, its SE, the t statistic
    and the one-sided p of "searched is no better" (Student's t on n - 1 d.f.). Pooling the
    budgets asks whether the search beats ``other`` at all, with 3x the pairs of one budget; the
    per-budget comparison stays the benchmark's test, and this does not replace it."""
    diffs = [d for factor in factors for d in paired_diffs(records, factor, other)]
    if len(diffs) < 2:
        return None
    mean, se = statistics.mean(diffs), _se(diffs)
    # a zero SE: every pair the same difference, as sure as a t can be
    constant = math.copysign(math.inf, mean) if mean else 0.0
    t = mean / se if se > 0 else constant
    p = float(t_dist.sf(t, len(diffs) - 1))
    return {"mean": mean, "se": se, "t": t, "p": p, "n": float(len(diffs))}


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def plot(
    fronts: dict[str, list[Any]], s0: float, volumes: dict[str, float], path: Path, shared: bool
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, marker in zip(ARMS, "osd", strict=True):
        if arm not in fronts:
            continue
        pts = fronts[arm]
        sds = [statistics.stdev(p[4]) if len(p[4]) > 1 else 0.0 for p in pts]
        ax.errorbar(
            [p[1] for p in pts], [100 * p[2] for p in pts], yerr=[100 * s for s in sds],
            marker=marker, capsize=3, label=f"{arm} (HV {volumes[arm]:.4f})",
        )  # fmt: skip
    ax.axhline(100 * s0, color="grey", linestyle=":", label="S0 alone")
    ax.set_xlabel("R1 MFLOPs (counted)")
    ax.set_ylabel("S1 = S0 + R1 test accuracy (%)")
    ax.set_title(
        f"R1 at {len({p[0] for pts in fronts.values() for p in pts})} budget(s): mean ± sd "
        "over seeds" + (" (one S0 for every seed)" if shared else "")
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
