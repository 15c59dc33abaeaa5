"""One command that checks a GPU machine and measures what a GPU user needs, in one table:

    python -m benchmarks.gpu_check [--device cuda] [--set res_students.0.search.epochs=2]
    python -m benchmarks.gpu_check --device cpu --tiny   # the same code in seconds (a test)

(a) the fused search cells against the per-edge reference cells on the device: float32 (TF32
    off) within the tests' tolerance, and under bfloat16 autocast losing no more than the
    reference does (``tests/space/test_fused_devices.py`` states both);
(b) a search training step (weights and architecture) in images per second, ours at float32 and
    bf16, NNI 3.0's DARTS step at float32 like for like when NNI is importable (its own
    environment, ``make nni-venv``), at the product's default search (5 cells, 16 channels,
    batch 64, CIFAR 3x32x32) and DARTS's (8 cells, 16 channels, batch 64), each with its share of
    the float32 or bfloat16 matrix-product peak measured in the same run
    (``benchmarks.search_speed`` counts a step's FLOPs);
(c) ResNet-20 and ResNet-110 training steps on CIFAR-shaped uint8 images with CIFAR's
    augmentation, at float32, bf16 and bf16 + channels-last: images per second and seconds per
    50,000-image epoch, the data held on the device (``distill.device_data``) and through a
    ``DataLoader`` (worker processes, pinned memory);
(d) the digits ResKD job with a searched R1 (``configs/digits-search.yaml``, ``--set`` changes
    it) through the pipeline, end to end, with its wall-clock and its combined student's accuracy.

The record goes to ``benchmarks/results/gpu_check_<device>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch
import yaml

from api.client import with_sets
from benchmarks.common import announce, write_record
from benchmarks.search_speed import matmul_peak, nni, ours, step_gflop
from distill.batching import Indexed, loader, loader_workers
from distill.catalog import CIFAR10
from distill.data import TensorImages
from distill.datasets.transforms import train_transform
from distill.models import build_model
from distill.precision import Amp, batch_to, place
from distill.report import format_table
from distill.train import Supervised, TrainConfig, make_optimizer
from search.config import RunConfig
from search.pipeline import run
from search.strategies.stacnas import StacNAS
from space.numbers import duration, percent
from space.operations import PRIMITIVES
from space.supernet import NetShape, Supernet, uniform_candidates

Row = dict[str, Any]
RESULTS = Path(__file__).parent / "results"
DIGITS_SEARCH = Path(__file__).parents[1] / "configs" / "digits-search.yaml"
COLUMNS = ("part", "check", "figure", "detail")
FP32_TOLERANCE = 1e-4  # fused against per-edge, float32 on the device
BF16_OUTPUT, BF16_GRAD_FACTOR, BF16_GRAD_SLACK = 0.05, 2.0, 0.05


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- (a) fused against per-edge ------------------------------------------------------------


def _pass(net: Supernet, x: torch.Tensor, target: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The output and the architecture gradient of one pass, concatenated."""
    net.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = net(x)
    (out.float() - target).square().mean().backward()
    alphas = [a.grad.flatten() for a in net.arch_parameters() if a.grad is not None]
    return torch.cat([out.float().detach().flatten(), *alphas])


def equality_rows(args: argparse.Namespace) -> list[Row]:
    """(a): per case, the float32 difference and the bfloat16 losses of both cells."""
    device = torch.device(args.device)
    size, channels = (8, 4) if args.tiny else (32, 8)
    cases = {"DARTS, 8 operations": PRIMITIVES, "STACNAS stage 1": StacNAS.stage1_ops}
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    try:
        for name, ops in cases.items():
            shape = NetShape.of(
                channels=channels, layers=4, num_classes=10, in_chans=3, input_size=size
            )
            torch.manual_seed(0)
            reference = Supernet(shape, uniform_candidates(ops), fused=False)
            fused = Supernet(shape, uniform_candidates(ops))
            fused.copy_from(reference)
            with torch.no_grad():
                for a, b in zip(reference.arch_parameters(), fused.arch_parameters(), strict=True):
                    b.copy_(a.normal_())
            reference.to(device), fused.to(device)
            x = torch.randn(6, 3, size, size, device=device)
            target = torch.randn(6, 10, device=device)
            ref32, fused32 = _pass(reference, x, target, False), _pass(fused, x, target, False)
            gap = float((fused32 - ref32).abs().max())
            ok = "ok" if gap <= FP32_TOLERANCE * max(1.0, float(ref32.abs().max())) else "FAILED"
            rows.append(
                _row(
                    "a",
                    f"fused = per-edge, {name}, float32",
                    gap,
                    "max |difference|",
                    f"tolerance {FP32_TOLERANCE:g} (relative): {ok}",
                )
            )
            rows.append(_bf16_row(name, reference, fused, x, target, ref32))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    return rows


def _bf16_row(
    name: str,
    reference: Supernet,
    fused: Supernet,
    x: torch.Tensor,
    t: torch.Tensor,
    exact: torch.Tensor,
) -> Row:
    classes = t.shape[1] * t.shape[0]  # the output's values come first, the gradient after

    def errors(got: torch.Tensor) -> tuple[float, float]:
        def off(a: torch.Tensor, b: torch.Tensor) -> float:
            return float((a - b).norm() / b.norm())

        return off(got[:classes], exact[:classes]), off(got[classes:], exact[classes:])

    ref_out, ref_grad = errors(_pass(reference, x, t, True))
    out, grad = errors(_pass(fused, x, t, True))
    ok = out <= BF16_OUTPUT and grad <= BF16_GRAD_FACTOR * ref_grad + BF16_GRAD_SLACK
    verdict = "ok" if ok else "FAILED"
    detail = (
        f"output {percent(out)} off float32 (per-edge {percent(ref_out)}); architecture "
        f"gradient {percent(grad)} (per-edge {percent(ref_grad)}): {verdict}"
    )
    return _row("a", f"fused under bf16 autocast, {name}", out, "relative error", detail)


# --- (b) search steps ----------------------------------------------------------------------


SEARCH_SHAPES = {  # name: (channels, layers, batch, size)
    "default search (5 cells)": (16, 5, 64, 32),
    "DARTS's search (8 cells)": (16, 8, 64, 32),
}
TINY_SHAPES = {"tiny search (3 cells)": (4, 3, 8, 8)}
STEPS = {
    "STACNAS stage 1, one-level": (StacNAS.stage1_ops, "one-level"),
    "DARTS, bilevel": (PRIMITIVES, "bilevel"),
}


def search_rows(args: argparse.Namespace) -> list[Row]:
    """(b): our steps at float32 and bf16 and NNI's at float32, per shape."""
    n = 256 if args.tiny else 4096
    peaks = {
        p: matmul_peak(n, args.device, dtype=d)
        for p, d in (("32", torch.float32), ("bf16", torch.bfloat16))
    }
    rows = []
    shapes = TINY_SHAPES if args.tiny else SEARCH_SHAPES
    for shape_name, (channels, layers, batch, size) in shapes.items():
        shape = NetShape.of(
            channels=channels, layers=layers, num_classes=10, in_chans=3, input_size=size
        )
        options = argparse.Namespace(
            batch=batch,
            in_chans=3,
            size=size,
            device=args.device,
            channels_last=False,
            warmup=args.warmup,
            steps=args.steps,
            compare_pooling=False,
        )
        for step_name, (ops, optimization) in STEPS.items():
            for precision in ("32", "bf16"):
                options.precision = precision
                got = ours(step_name, ops, optimization, options, shape)
                rows.append(
                    _search_row(
                        f"ours: {step_name}, {shape_name}, {_name(precision)}",
                        got,
                        step_gflop(shape, ops, optimization, batch),
                        peaks[precision],
                        precision,
                    )
                )
        rows.append(_nni_row(options, shape, shape_name, peaks["32"]))
    return rows


def _name(precision: str) -> str:
    return "float32" if precision == "32" else precision


def _search_row(check: str, got: Row, gflop: float, peak: float, precision: str) -> Row:
    share = gflop / (got["ms/step"] / 1000) / peak
    detail = f"{percent(share)} of the {_name(precision)} matmul peak ({peak:.0f} GFLOP/s)"
    return _row("b", check, got["images/s"], "images/s", detail) | {"share_of_peak": share}


def _nni_row(options: argparse.Namespace, shape: NetShape, shape_name: str, peak: float) -> Row:
    check = f"NNI 3.0 DARTS step, {shape_name}, float32"
    try:
        import nni as _  # noqa: F401  (the [nni] extra, in its own environment)
    except ImportError:
        return _row("b", check, None, "", "not installed (make nni-venv; run it there)")
    options.precision = "32"
    got = nni(options, shape)
    return _search_row(
        check, got, step_gflop(shape, PRIMITIVES, "bilevel", options.batch), peak, "32"
    )


# --- (c) ResNet training -------------------------------------------------------------------


def cifar_shaped(n: int, size: int) -> TensorImages:
    """``n`` random uint8 images of ``size`` (CIFAR: 32) under CIFAR-10's training view."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    entry = CIFAR10.with_info(image_size=size)
    return TensorImages(
        images, torch.randint(0, 10, (n,), generator=g), train_transform(entry, augment=True)
    )


def train_rate(model: str, precision: str, last: bool, on_device: bool, args: Any) -> float:
    """Images per second of training steps of ``model``: batches drawn, augmented, stepped."""
    device = torch.device(args.device)
    batch, size = (8, 16) if args.tiny else (128, 32)
    data = cifar_shaped(batch * (args.warmup + args.steps), size)
    torch.manual_seed(0)
    task = Supervised(build_model(model, CIFAR10.info.with_(image_size=size)))
    place(task, device, last=last)
    task.amp = Amp.of(precision, device)
    optimizer = make_optimizer(task.optimized_parameters(), TrainConfig())
    cuda = device.type == "cuda"  # a DataLoader there: worker processes, pinned memory
    workers = loader_workers() if cuda and not on_device else 0
    batches = loader(
        Indexed(data),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        device=device if on_device or cuda else None,
    )
    task.train()
    started, seen = 0.0, 0
    for i, (x, y, index) in enumerate(batches):
        if i == args.warmup:
            sync(device)
            started = time.perf_counter()
        x, y = batch_to(x, device, last=last), y.to(device, non_blocking=True)
        task.step(x, y, index, optimizer)
        seen += len(y) if i >= args.warmup else 0
    sync(device)
    return seen / (time.perf_counter() - started)


def training_rows(args: argparse.Namespace) -> list[Row]:
    """(c): per network, precision and data path."""
    rows = []
    for model in ("resnet20", "resnet110"):
        for precision, last in (("32", False), ("bf16", False), ("bf16", True)):
            for on_device in (True, False):
                rate = train_rate(model, precision, last, on_device, args)
                check = (
                    f"{model}, {_name(precision)}{' + channels-last' if last else ''}, "
                    f"{'data on the device' if on_device else 'DataLoader'}"
                )
                epoch = 50_000 / rate
                rows.append(
                    _row("c", check, rate, "images/s", f"{duration(epoch)} per 50,000-image epoch")
                    | {"seconds_per_epoch": epoch}
                )
    return rows


# --- (d) a job end to end ------------------------------------------------------------------


TINY_JOB = [
    "val_size=60",
    "teacher={model: resnet8, width: 0.25}",
    "train.epochs=1",
    "teacher_train.epochs=1",
    "res_students.0.search.epochs=1",
    "res_students.0.search.layers=3",
]


def end_to_end_row(args: argparse.Namespace) -> Row:
    """(d): the digits ResKD job with a searched R1, from nothing stored, through the pipeline."""
    raw = yaml.safe_load(DIGITS_SEARCH.read_text())
    raw = with_sets(raw | {"device": args.device}, [*(TINY_JOB if args.tiny else []), *args.set])
    config = RunConfig.from_dict(raw)
    with TemporaryDirectory(prefix="gpu-check-") as tmp:
        started = time.perf_counter()
        report = run(config, out_dir=Path(tmp), progress=False, log=lambda _: None)
        seconds = time.perf_counter() - started
    adaptive = report.row("adaptive") or report.rows[-1]
    detail = (
        f"{duration(seconds)}; combined student {percent(adaptive.accuracy)} test "
        f"accuracy, {len(report.stages)} stages"
    )
    return _row("d", "digits ResKD, searched R1, end to end", seconds, "s", detail)


# --- the table -----------------------------------------------------------------------------


def _row(part: str, check: str, value: float | None, unit: str, detail: str) -> Row:
    return {"part": part, "check": check, "value": value, "unit": unit, "detail": detail}


def shown(row: Row) -> Row:
    value = row["value"]
    figure = "-" if value is None else f"{value:.4g} {row['unit']}".strip()
    return {"part": row["part"], "check": row["check"], "figure": figure, "detail": row["detail"]}


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and steps (seconds)")
    parser.add_argument("--steps", type=int, help="timed steps per figure (default 20, tiny 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5, tiny 1)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the (d) job's run config (YAML value, dotted key)",
    )
    parser.add_argument("--out", type=Path, help="the record (default results/gpu_check_DEVICE)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup or (1 if args.tiny else 5)
    kind = torch.device(args.device).type
    args.out = args.out or RESULTS / f"gpu_check_{kind}{'_tiny' if args.tiny else ''}.json"
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(argv)
    announce()
    device = torch.device(args.device)
    print(f"device: {describe(device)}", flush=True)
    started = time.perf_counter()
    rows = [*equality_rows(args), *search_rows(args), *training_rows(args), end_to_end_row(args)]
    print(format_table([shown(r) for r in rows], COLUMNS))
    total = time.perf_counter() - started
    print(f"gpu_check: {duration(total)}")
    figures = {"device": describe(device), "tiny": args.tiny, "seconds": total, "rows": rows}
    print(f"record: {write_record(args.out, figures)}")
    return rows


if __name__ == "__main__":
    main()
