"""How much of R1's accuracy is its architecture, and how much its training's luck? The size of the
prize a search can win over random genotypes, measured before judging a search by it.

    python -m benchmarks.architecture_spread --from runs/bench-quality [--budget 1]
        [--draw-seeds 0 1 2] [--seeds 0 1 2] [--genotype [NAME=]search-*/genotype.json ...]
        [--augment] [--bench-seeds 3] [--out runs/bench-spread]
    python -m benchmarks.architecture_spread --records runs/bench-spread/spread.json

``--from`` is a ``python -m benchmarks.search_quality --shared-student`` output directory: its T
and S0 (``teacher.pt``, ``student.pt``) serve every run here. The genotypes are the random arm's of
that benchmark (``--random`` per draw seed, drawn and repaired by the same code, so ``--draw-seeds
0 1 2`` gives the very genotypes its random arm trained at that budget), plus any ``--genotype``
file (a search's ``genotype.json``). Each genotype is trained as R1 once per ``--seeds`` seed,
exactly as the benchmark trains it (same config, same epochs; only the seed differs).

Prints each genotype's S1 per seed and its mean, and splits the spread the way a one-way
random-effects ANOVA does: between genotypes (what a search can exploit) and within a genotype
(seed-to-seed training noise, which no search can). From the split it says what the quality
benchmark's test can show at this budget (``power``): how likely a search that always found the
space's top 10% (or 1%) of genotypes would be to pass it with ``--bench-seeds`` seeds, and how many
seeds that would take. Writes ``spread.json`` (with the command line that reproduces it) and
``spread.png`` (each genotype's S1 over the seeds, sorted by mean) under ``--out``. ``--records``
summarizes an earlier ``spread.json`` again (its split and power, under other ``--bench-seeds``)
without training anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy.stats import f as f_dist

from benchmarks.common import (
    DATASETS,
    add_allocator_option,
    add_data_options,
    announce,
    base_config,
    check_data_options,
    preload_allocator,
    quality_setting,
    random_genotypes,
    run_quietly,
    search_spec,
    write_record,
)
from distill.data import dataset_info
from distill.models import NetSpec, complexity


def drawn(seed: int, factor: float, budget: float, count: int, info: Any) -> list[dict[str, Any]]:
    """The random arm's genotypes of ``search_quality`` for this seed and budget."""
    spec = search_spec(budget, seed)
    return [
        {
            "name": f"random s{seed}#{k}",
            "genotype": d.genotype.to_dict(),
            "channels": d.channels,
            "layers": spec.layers,
        }
        for k, d in enumerate(random_genotypes(spec, info, factor=factor, count=count))
    ]


def decompose(table: dict[str, list[float]]) -> dict[str, float]:
    """One-way random-effects ANOVA over genotypes (rows) with n seeds each (balanced): the
    between-genotype variance component ``(MS_between - MS_within) / n`` (0 when negative) and
    the within-genotype one ``MS_within``, as standard deviations, in accuracy units."""
    rows = list(table.values())
    n, k = len(rows[0]), len(rows)
    if any(len(r) != n for r in rows) or n < 2 or k < 2:
        raise SystemExit("needs at least 2 genotypes, each with the same number (>= 2) of seeds")
    means = [statistics.mean(r) for r in rows]
    grand = statistics.mean(means)
    ms_between = n * sum((m - grand) ** 2 for m in means) / (k - 1)
    ms_within = sum((v - m) ** 2 for r, m in zip(rows, means, strict=True) for v in r) / (
        k * (n - 1)
    )
    between = max(0.0, (ms_between - ms_within) / n)
    return {
        "genotypes": k,
        "seeds": n,
        "mean": grand,
        "sd_architecture": between**0.5,
        "sd_training": ms_within**0.5,
        "architecture_share": between / (between + ms_within) if between + ms_within else 0.0,
        "f_statistic": ms_between / ms_within if ms_within else float("inf"),
        # the chance of an F this large with no architecture effect at all
        "p_value": float(f_dist.sf(ms_between / ms_within, k - 1, k * (n - 1)))
        if ms_within
        else 0.0,
    }


def given_vs_random(
    table: dict[str, list[float]], parts: dict[str, float]
) -> dict[str, float] | None:
    """The given genotypes (a search's) against the random ones, both under the same seeds.

    ``diff``: the mean of the given genotypes' runs minus the random ones'; ``se``: its standard
    error if the given genotypes were draws like the random ones (the null), from the variance
    split of the random genotypes: sqrt(between * (1/g + 1/r) + within * (1/G + 1/R)) for g and
    r genotypes with G and R runs. ``p_rank``: the exact one-sided permutation p on the
    genotypes' means, the share of the ways to pick g of all g + r genotypes whose mean is at
    least the given ones' (every one of them enumerated): how often draws would look this good.
    """
    given = [v for k, v in table.items() if not k.startswith("random ")]
    drawn = [v for k, v in table.items() if k.startswith("random ")]
    if not given or len(drawn) < 2:
        return None
    g_runs = [x for v in given for x in v]
    r_runs = [x for v in drawn for x in v]
    b2, w2 = parts["sd_architecture"] ** 2, parts["sd_training"] ** 2
    se = (b2 * (1 / len(given) + 1 / len(drawn)) + w2 * (1 / len(g_runs) + 1 / len(r_runs))) ** 0.5
    means = [statistics.mean(v) for v in given + drawn]
    observed = sum(means[: len(given)])
    picks = itertools.combinations(means, len(given))
    # ties count as at least: the accuracies are float32 (errors of 1e-8), one image is 1e-3
    at_least = sum(1 for pick in picks if sum(pick) >= observed - 1e-6)
    return {
        "given": len(given),
        "random": len(drawn),
        "diff": statistics.mean(g_runs) - statistics.mean(r_runs),
        "se": se,
        "p_rank": at_least / math.comb(len(means), len(given)),
    }


@dataclass(frozen=True)
class Power:
    """What ``search_quality``'s test can show for a search of a given strength (``power``)."""

    top: float  # the search always returns a genotype at the space's top ``top`` quantile
    margin: float  # its expected S1 over the random arm's, in accuracy units
    pooled_se: float  # the test's pooled standard error of the two arms' means
    p_pass: float  # the chance that the margin comes out above the pooled SE
    p_above: float  # the chance that it comes out above 0
    seeds_for_goal: int | None  # the seeds that would make p_pass >= goal (None: no number)
    goal: float


def power(
    parts: dict[str, float], *, seeds: int, per_seed: int, top: float, goal: float = 0.8
) -> Power:
    """What ``search_quality``'s test can show at this budget, given the variance split.

    A search that always returns a genotype at the space's top ``top`` quantile (an oracle of
    that strength; genotype means taken as normal with sd ``sd_architecture``) is +delta = z *
    sd_architecture above the space's mean. The benchmark compares its ``seeds`` R1 (one per
    seed, each with the training noise ``sd_training``) with the random arm's per-seed means of
    ``per_seed`` draws, whose variance is (between + within) / per_seed, and passes a budget when
    the margin exceeds the pooled standard error of the two arms' means. Treating that SE as
    known, the margin is normal around delta with sd = pooled SE, so the chance of passing is
    Phi(delta / SE - 1), of coming out above random at all Phi(delta / SE); and the seeds it takes
    to pass with probability ``goal`` solve delta / SE(n) = 1 + z_goal, SE(n) = c / sqrt(n).
    """
    normal = statistics.NormalDist()
    b2, w2 = parts["sd_architecture"] ** 2, parts["sd_training"] ** 2
    delta = normal.inv_cdf(1 - top) * parts["sd_architecture"]
    c = (w2 + (b2 + w2) / per_seed) ** 0.5
    se = c / seeds**0.5
    return Power(
        top=top,
        margin=delta,
        pooled_se=se,
        p_pass=normal.cdf(delta / se - 1) if se else float(delta > 0),
        p_above=normal.cdf(delta / se) if se else float(delta > 0),
        seeds_for_goal=(
            math.ceil((c * (1 + normal.inv_cdf(goal)) / delta) ** 2) if delta > 0 else None
        ),
        goal=goal,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--from", dest="source", help="a --shared-student run")
    where.add_argument(
        "--records", help="an earlier run's spread.json: summarize it again, train nothing"
    )
    parser.add_argument("--dataset", default="mnist5k", choices=DATASETS)
    add_data_options(parser)
    parser.add_argument("--budget", type=float, default=1.0, help="x ResNet-8x0.5's MFLOPs")
    parser.add_argument("--draw-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--random", type=int, default=3, help="genotypes per draw seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--genotype", nargs="*", default=[], help="genotype.json files, as PATH or NAME=PATH"
    )
    parser.add_argument("--epochs", type=int, default=6, help="R1 epochs (the benchmark's: 6)")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train R1 on random shifts (T and S0 stay the benchmark's, from --from)",
    )
    parser.add_argument(
        "--bench-seeds", type=int, default=3, help="the quality benchmark's seeds, for its power"
    )
    parser.add_argument("--out", default="runs/bench-spread")
    add_allocator_option(parser)
    args = parser.parse_args()
    if args.records:
        announce()
        earlier = json.loads(Path(args.records).read_text())
        trained_by = {"file": args.records, "command": earlier.get("command")}
        summarize(
            earlier["records"], Path(args.out), bench_seeds=args.bench_seeds,
            per_seed=args.random, records_from=trained_by,
        )  # fmt: skip
        return
    check_data_options(args)
    preload_allocator(args.allocator)
    announce()

    source, out = Path(args.source), Path(args.out)
    for name in ("teacher.pt", "student.pt"):
        if not (source / name).exists():
            raise SystemExit(
                f"--from: no {source / name}; run python -m benchmarks.search_quality "
                "--shared-student"
            )
    info = dataset_info(args.dataset)
    unit = complexity(NetSpec.for_dataset("resnet8", info, width=0.5).build(), info).mflops
    budget = round(args.budget * unit, 4)
    items = [g for s in args.draw_seeds for g in drawn(s, args.budget, budget, args.random, info)]
    for given in args.genotype:
        name, _, path = given.rpartition("=")
        found = json.loads(Path(path).read_text())
        items.append(
            {
                "name": name or Path(path).parent.name,
                "genotype": found["genotype"],
                "channels": found["channels"],
                "layers": found["layers"],
            }
        )
    records = []
    for item in items:
        for seed in args.seeds:
            base = quality_setting(
                base_config(
                    args.dataset, seed, epochs=args.epochs, teacher_epochs=8,
                    root=args.root, device=args.device, val_size=args.val_size,
                )
            )  # fmt: skip
            base["teacher_checkpoint"] = str(source / "teacher.pt")
            base["student_checkpoint"] = str(source / "student.pt")
            base["augment"] = base["augment"] or args.augment
            r1 = {k: item[k] for k in ("genotype", "channels", "layers")}
            report = run_quietly(base | {"res_students": [r1]}, out / f"seed{seed}")
            rows = {r.model: r for r in report.rows}
            record = {
                "name": item["name"],
                "seed": seed,
                "s0": rows["S0"].accuracy,
                "s1": rows["S1"].accuracy,
                "r1_mflops": rows["S1"].mflops - rows["S0"].mflops,
                "genotype": item["genotype"],
                "channels": item["channels"],
            }
            records.append(record)
            print(f"{item['name']:>28s} seed {seed}: S1 {record['s1']:.4f}", flush=True)
    summarize(records, out, bench_seeds=args.bench_seeds, per_seed=args.random)


def summarize(
    records: list[dict[str, Any]],
    out: Path,
    *,
    bench_seeds: int = 3,
    per_seed: int = 3,
    records_from: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Print and write (``OUT/spread.json``, ``OUT/spread.png``) the split of ``records``;
    ``records_from``: the earlier record they were read from (its file and command line)."""
    table: dict[str, list[float]] = {}
    for r in records:
        table.setdefault(r["name"], []).append(r["s1"])
    order = sorted(table, key=lambda k: statistics.mean(table[k]), reverse=True)
    print()
    for name in order:
        values = " ".join(f"{100 * v:.2f}" for v in table[name])
        print(f"{name:>28s}  {100 * statistics.mean(table[name]):.2f}  ({values})")
    drawn_only = {k: v for k, v in table.items() if k.startswith("random ")}
    parts = decompose(drawn_only if len(drawn_only) > 1 else table)
    print(
        f"\n{parts['genotypes']} {'random ' if len(drawn_only) > 1 else ''}genotypes x "
        f"{parts['seeds']} seeds, mean S1 {100 * parts['mean']:.2f}%: sd between genotypes "
        f"{100 * parts['sd_architecture']:.2f}, within (training seeds) "
        f"{100 * parts['sd_training']:.2f} points; architecture's share of the variance "
        f"{parts['architecture_share']:.0%} (F = {parts['f_statistic']:.2f} on "
        f"{parts['genotypes'] - 1} and {parts['genotypes'] * (parts['seeds'] - 1)} d.f., "
        f"p = {parts['p_value']:.2f})"
    )
    se = parts["sd_training"] / parts["seeds"] ** 0.5
    for name in order:
        if name not in drawn_only and len(drawn_only) > 1:
            diff = statistics.mean(table[name]) - parts["mean"]
            print(
                f"{name}: {100 * diff:+.2f} points against the random genotypes' mean "
                f"(training SE of a {parts['seeds']}-seed mean: {100 * se:.2f})"
            )
    versus = given_vs_random(table, parts)
    if versus is not None:
        print(
            f"the {versus['given']} given genotypes against the {versus['random']} random ones: "
            f"{100 * versus['diff']:+.2f} points over their runs (SE {100 * versus['se']:.2f} if "
            f"they were draws like them); exact permutation p on the genotypes' means "
            f"{versus['p_rank']:.3f} (one-sided: the chance that draws rank this high)"
        )
    powers = [power(parts, seeds=bench_seeds, per_seed=per_seed, top=q) for q in (0.10, 0.01)]
    print(
        f"\nbenchmarks.search_quality's test here ({bench_seeds} seeds, {per_seed} random "
        "genotypes per seed; passed when searched - random > their pooled SE):"
    )
    for p in powers:
        print(
            f"  a search that always finds the top {p.top:.0%} of these genotypes: "
            f"+{100 * p.margin:.2f} points against a pooled SE of {100 * p.pooled_se:.2f}; "
            f"passes with probability {p.p_pass:.0%} (above random at all: {p.p_above:.0%}); "
            f"{seeds_phrase(p.seeds_for_goal)} for {p.goal:.0%}"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_record(
        out / "spread.json",
        {
            "records": records,
            "anova": parts,
            "given_vs_random": versus,
            "power": [asdict(p) for p in powers],
            **({"records_from": records_from} if records_from else {}),
        },
    )
    split = (
        f"sd between genotypes {100 * parts['sd_architecture']:.2f}, within "
        f"{100 * parts['sd_training']:.2f} points; F = {parts['f_statistic']:.2f}, "
        f"p = {parts['p_value']:.2f}"
    )
    plot(table, order, out / "spread.png", split)
    print(f"wrote {out / 'spread.json'} and {out / 'spread.png'}")
    return parts


def seeds_phrase(n: int | None) -> str:
    return "no number of seeds" if n is None else f"{n} seed" + ("s" if n != 1 else "")


def plot(table: dict[str, list[float]], order: list[str], path: Path, split: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 0.35 * len(order) + 1.6))
    for i, name in enumerate(order):
        values = [100 * v for v in table[name]]
        color = "tab:blue" if name.startswith("random ") else "tab:orange"
        ax.scatter(values, [i] * len(values), color=color, alpha=0.6, s=18)
        ax.plot([statistics.mean(values)], [i], marker="|", color="black", markersize=14)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("S1 = S0 + R1 test accuracy (%): one dot per training seed, bar: mean")
    ax.set_title(
        "Each genotype under several training seeds (orange: given ones)"
        + (f"\n{split}" if split else ""),
        fontsize=9,
    )
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
