"""Wall-clock time of sample-adaptive inference (Algorithm 2) against the full S_n, next to the
MFLOPs ratio, in one run on the CPU.

    python -m benchmarks.adaptive_inference [--combined runs/.../combined_student.pt]
        [--record FILE]

Without ``--combined`` it first trains a small ResKD student on the real MNIST 5k (S0 ResNet-8,
R1 ResNet-14; stored results are reused on later runs). Both paths see the same pre-loaded test
batches; each is timed ``--repeats`` times and the median is kept. Goal: the wall-clock saving is
at least 70% of the MFLOPs saving at batch size 256.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.common import add_record_option, announce, run_quietly, write_record
from distill.combined import CombinedStudent
from distill.data import load_dataset
from distill.train import loader


def trained_student(out: Path) -> Path:
    run_quietly(
        {
            "dataset": "mnist5k",
            "augment": False,
            "val_size": 500,
            "teacher": "resnet20",
            "student": "resnet8",
            "res_students": ["resnet14"],
            "kd": {"distance": "kl"},
            "max_stages": 1,
            "preset": "cpu-small",
            "train": {"epochs": 3},
            "teacher_train": {"epochs": 4},
        },
        out,
    )
    return out / "combined_student.pt"


def median_seconds(
    fn: Callable[[Tensor], object], batches: Sequence[Tensor], repeats: int
) -> float:
    times = []
    with torch.inference_mode():
        for x in batches[:1]:
            fn(x)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            for x in batches:
                fn(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--combined", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-adaptive"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    add_record_option(parser)
    args = parser.parse_args()
    announce()

    path = args.combined or trained_student(args.out)
    model = CombinedStudent.load(path)
    test = load_dataset("mnist5k", augment=False).test
    batches = [x for x, _ in loader(test, batch_size=args.batch_size)]
    labels = torch.cat([y for _, y in loader(test, batch_size=args.batch_size)])

    with torch.inference_mode():
        results = [model.adaptive(x) for x in batches]
    used = torch.cat([r.used for r in results])
    adaptive_acc = float(
        (torch.cat([r.logits for r in results]).argmax(1) == labels).float().mean()
    )
    with torch.inference_mode():
        full_acc = float(
            (torch.cat([model.full(x) for x in batches]).argmax(1) == labels).float().mean()
        )

    assert model.mflops is not None
    full_mflops = sum(model.mflops)
    adaptive_mflops = model.expected_mflops(used)
    t_full = median_seconds(model.full, batches, args.repeats)
    t_adaptive = median_seconds(model.forward, batches, args.repeats)

    mflops_saving = 1 - adaptive_mflops / full_mflops
    wall_saving = 1 - t_adaptive / t_full
    print(
        f"combined student: {path}  (TH_energy {model.threshold:.4f}, "
        f"{model.num_stages} res-student(s), {len(labels)} test images, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads)"
    )
    print(
        f"samples stopping after 0..n res-students: "
        f"{torch.bincount(used, minlength=model.num_stages + 1).tolist()}"
    )
    print(f"{'':12}{'accuracy':>10}{'MFLOPs/img':>12}{'seconds':>10}")
    print(f"{'full S_n':12}{full_acc:>10.4f}{full_mflops:>12.3f}{t_full:>10.3f}")
    print(f"{'adaptive':12}{adaptive_acc:>10.4f}{adaptive_mflops:>12.3f}{t_adaptive:>10.3f}")
    print(
        f"MFLOPs ratio adaptive/full: {adaptive_mflops / full_mflops:.3f}  "
        f"(saving {100 * mflops_saving:.1f}%)"
    )
    print(
        f"wall-clock ratio adaptive/full: {t_adaptive / t_full:.3f}  "
        f"(saving {100 * wall_saving:.1f}%)"
    )
    if mflops_saving > 0:
        share = wall_saving / mflops_saving
        print(
            f"wall-clock saving / MFLOPs saving: {share:.2f}  (goal >= 0.70: "
            f"{'met' if share >= 0.7 else 'not met'})"
        )
    if args.record:
        figures = {
            "combined": str(path),
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "accuracy": {"full": full_acc, "adaptive": adaptive_acc},
            "mflops": {"full": full_mflops, "adaptive": adaptive_mflops},
            "seconds": {"full": t_full, "adaptive": t_adaptive},
        }
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
