"""``reskd export``: the deployable students in ONNX, TorchScript or ``torch.export`` form.

Algorithm 2 (a sample stops adding res-students once its Energy passes the threshold) is
data-dependent control flow on a data-dependent subset of the batch. Tracing it records one
path (the exported model was S0 alone), and ``torch.export`` cannot guard on it. Rather than
flatten it into masks (every res-student would then run on every sample, and the saving would
be gone), each network is exported on its own, with a dynamic batch dimension, next to a
``manifest.json`` (order, threshold, MFLOPs, the images' preprocessing and class names),
``run_adaptive.py`` (``distill.adaptive_runner``), which preprocesses image files and runs
Algorithm 2 over the parts with NumPy and the format's runtime, skipping for real, and
``predict.py``, which classifies image files with it (``python predict.py IMAGE...``). The
assistant's S + A is one feed-forward network: one part.

Every export is checked before it is kept: the exported parts, run by the runner on sample
inputs, must give PyTorch's logits (adaptive and full) within ``ATOL`` and the same number of
res-students per sample; otherwise the output is removed and :class:`ExportError` says why.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from distill import adaptive_runner
from distill.assistant import AssistedStudent
from distill.catalog import DatasetInfo
from distill.combined import CombinedStudent
from distill.losses import energy

Format = Literal["onnx", "torchscript", "exported-program"]
FORMATS: tuple[str, ...] = get_args(Format)
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
ATOL = 1e-4  # logits; float32 kernels of two runtimes differ in the last digits
NEAR = 1e-5  # an Energy this close to the threshold may fall on either side in another runtime


# predict.py, written beside run_adaptive.py in every export: image files in, classes out
PREDICT_PY = '''"""Classify image files with the ResKD student exported in this directory:

    python predict.py IMAGE... [--json]

Prints each image's class and how many res-students it used, then their mean. Needs NumPy,
Pillow and the parts' runtime (ONNX Runtime for .onnx parts), neither torch nor reskd.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run_adaptive.py beside this file, under python -I too
sys.dont_write_bytecode = True  # leave the export's directory as it was shipped

from run_adaptive import predict_main  # noqa: E402

raise SystemExit(predict_main(sys.argv[1:], manifest=HERE / "manifest.json"))
'''


class ExportError(ValueError):
    pass


def dataset_preprocessing(info: DatasetInfo) -> dict[str, Any]:
    """A dataset's preprocessing (:attr:`DatasetInfo.preprocessing`, with its class names), for
    student files written before they carried their own. ``resize`` is null: an image that is
    not ``image_size`` square is resized (short side) and centre-cropped, as its test transform
    does."""
    return info.preprocessing.to_dict() | {"resize": None}


def _described(
    preprocessing: dict[str, Any] | None,
    class_names: Sequence[str] | None,
    check_inputs: Tensor,
    num_classes: int,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest's ``preprocessing`` (checked against the networks' input) and
    ``class_names`` (one per class; "0".."n-1" when none are given)."""
    names = class_names if class_names is not None else (preprocessing or {}).get("class_names")
    names = [str(c) for c in range(num_classes)] if names is None else list(names)
    if len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ExportError(
            f"class_names: must be {num_classes} strings (one per class of the student), "
            f"got {len(names)}"
        )
    if preprocessing is None:
        return None, names
    try:
        checked = adaptive_runner.check_preprocessing(preprocessing)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    shape = [checked["channels"], checked["image_size"], checked["image_size"]]
    if shape != list(check_inputs.shape[1:]):
        raise ExportError(
            f"preprocessing: gives {'x'.join(map(str, shape))} inputs (channels, image_size), "
            f"but the networks are checked on {'x'.join(map(str, check_inputs.shape[1:]))}"
        )
    return checked, names


@dataclass
class Agreement:
    """How the exported model compares with PyTorch on the check inputs."""

    samples: int
    max_abs_full: float
    max_abs_adaptive: float
    used_equal: int  # samples that used the same number of res-students
    near_threshold: int  # samples whose Energy was within NEAR of the threshold
    mean_used: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _export_part(net: nn.Module, example: Tensor, path: Path, fmt: Format) -> None:
    net = net.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    if fmt == "onnx":
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, asked for here
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(net), str(path))
    else:
        program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(path))


def _parts(model: CombinedStudent | AssistedStudent) -> list[tuple[str, nn.Module]]:
    if isinstance(model, AssistedStudent):
        return [("assisted", model)]
    return [("S0", model.s0)] + [(f"R{i}", r) for i, r in enumerate(model.residuals, 1)]


Student = CombinedStudent | AssistedStudent


def _reference(model: Student, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """PyTorch's adaptive logits, res-students used, and full logits."""
    with torch.no_grad():
        if isinstance(model, AssistedStudent):
            out = model(x)
            return out, torch.zeros(len(x), dtype=torch.long), out
        result = model.adaptive(x)
        return result.logits, result.used, model.full(x)


def _near_threshold(model: CombinedStudent | AssistedStudent, x: Tensor) -> Tensor:
    """Samples whose Energy after some S_i lies within NEAR of the threshold."""
    near = torch.zeros(len(x), dtype=torch.bool)
    if isinstance(model, AssistedStudent) or not model.residuals:
        return near
    with torch.no_grad():
        logits = model.s0(x)
        for residual in model.residuals:
            near |= (energy(logits) - model.threshold).abs() <= NEAR
            logits = logits + residual(x)
    return near


def check(model: CombinedStudent | AssistedStudent, manifest: Path, x: Tensor) -> Agreement:
    """Run the export on ``x`` with the runner and compare with PyTorch."""
    exported = adaptive_runner.ExportedStudent(manifest)
    logits, used, full = _reference(model, x)
    e_logits, e_used = exported.adaptive(x.numpy())
    e_full = exported.full(x.numpy())
    near = _near_threshold(model, x).numpy()
    same = e_used == used.numpy()
    return Agreement(
        samples=len(x),
        max_abs_full=float(np.abs(e_full - full.numpy()).max()),
        max_abs_adaptive=float(np.abs(e_logits - logits.numpy())[same].max(initial=0.0)),
        used_equal=int(same.sum()),
        near_threshold=int(near.sum()),
        mean_used=float(e_used.mean()),
    )


def _export_parts(
    model: Student, out_dir: Path, fmt: Format, sample: Tensor, written: list[Path]
) -> list[dict[str, str]]:
    """Each part's file in ``out_dir`` (listed in ``written`` before it is written)."""
    parts = []
    for name, net in _parts(model):
        path = out_dir / f"{name}{SUFFIX[fmt]}"
        written.append(path)
        try:
            _export_part(net, sample, path, fmt)
        except Exception as exc:  # the exporter's own message, with the part's name
            raise ExportError(f"{name}: cannot be exported to {fmt}: {exc}") from exc
        parts.append({"name": name, "file": path.name})
    return parts


def _manifest(
    model: Student,
    fmt: Format,
    parts: list[dict[str, str]],
    input_shape: list[int],
    preprocessing: dict[str, Any] | None,
    class_names: list[str],
) -> dict[str, Any]:
    combined = isinstance(model, CombinedStudent)
    manifest: dict[str, Any] = {
        "format": adaptive_runner.MANIFEST,
        "kind": "combined" if combined else "assisted",
        "model_format": fmt,
        "parts": parts,
        "input_shape": input_shape,
        "preprocessing": preprocessing,
        "class_names": class_names,
        "stages": len(parts) - 1 if combined else 0,
        "energy": "sum(softmax(logits) ** 2) per sample (eq. 8)",
    }
    if isinstance(model, CombinedStudent):
        manifest |= {
            "threshold": model.threshold,
            "rule": "start with S0's logits; add R_1, R_2, ... while the sample's Energy "
            "is <= threshold (Algorithm 2)",
            "mflops": model.mflops,
        }
    return manifest


def _require_agreement(agreement: Agreement, fmt: Format) -> None:
    disagree = agreement.samples - agreement.used_equal - agreement.near_threshold
    if agreement.max_abs_full > ATOL or agreement.max_abs_adaptive > ATOL or disagree > 0:
        raise ExportError(
            f"the {fmt} export disagrees with PyTorch on {agreement.samples} inputs: max "
            f"|logit difference| {agreement.max_abs_full:.2e} (full), "
            f"{agreement.max_abs_adaptive:.2e} (adaptive), res-students used differ on "
            f"{agreement.samples - agreement.used_equal}; nothing was kept"
        )


def export(
    model: CombinedStudent | AssistedStudent,
    out_dir: Path,
    fmt: Format,
    check_inputs: Tensor,
    *,
    preprocessing: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[Path, Agreement]:
    """Write the parts, ``manifest.json``, ``run_adaptive.py`` and ``predict.py`` to
    ``out_dir``; check them on ``check_inputs`` (a batch of real inputs); remove everything and
    raise if they disagree.

    ``preprocessing`` (default: the combined student's own) turns image files into the
    networks' input (:func:`distill.adaptive_runner.check_preprocessing` lists its fields);
    ``class_names`` default to its ``class_names``, else "0".."n-1". Without preprocessing the
    export runs on arrays only (``run_adaptive.py``), not on image files."""
    if fmt not in FORMATS:
        raise ExportError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = model.eval()
    if preprocessing is None and isinstance(model, CombinedStudent):
        preprocessing = model.preprocessing
    with torch.no_grad():
        num_classes = int(_parts(model)[0][1](check_inputs[:1]).shape[1])
    described, names = _described(preprocessing, class_names, check_inputs, num_classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        parts = _export_parts(model, out_dir, fmt, check_inputs[:2], written)
        manifest = _manifest(model, fmt, parts, list(check_inputs.shape[1:]), described, names)
        path = out_dir / "manifest.json"
        written.append(path)
        path.write_text(json.dumps(manifest, indent=2))
        runner = out_dir / "run_adaptive.py"
        written.append(runner)
        shutil.copyfile(adaptive_runner.__file__, runner)
        predict = out_dir / "predict.py"
        written.append(predict)
        predict.write_text(PREDICT_PY)
        agreement = check(model, path, check_inputs)
        _require_agreement(agreement, fmt)
        manifest["check"] = agreement.to_dict()
        path.write_text(json.dumps(manifest, indent=2))
        return path, agreement
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def load_student(path: Path) -> CombinedStudent | AssistedStudent:
    """A ``combined_student.pt`` or ``assisted_student.pt`` (told apart by their format field)."""
    from distill.assistant import ASSISTED_FORMAT, load_assisted
    from distill.combined import FORMAT

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(f"{path}: not a student file torch can read ({exc})") from exc
    kind = payload.get("format") if isinstance(payload, dict) else None
    if kind == FORMAT:
        return CombinedStudent.load(path)
    if kind == ASSISTED_FORMAT:
        return load_assisted(path)
    raise ExportError(
        f"{path}: not a combined_student.pt ({FORMAT}) or assisted_student.pt ({ASSISTED_FORMAT})"
    )
