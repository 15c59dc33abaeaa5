"""Run an exported ResKD student (``reskd export``) without this package: the manifest's image
preprocessing and Algorithm 2 over the exported parts, with NumPy, Pillow and the part's runtime
(ONNX Runtime; TorchScript and ``torch.export`` programs need torch). ``reskd export`` copies this
file next to the parts as ``run_adaptive.py``, with a ``predict.py`` that calls it, and
``reskd predict`` imports it: one implementation wherever an export runs.

    python predict.py IMAGE... [--json]                  # image files: class, res-students used
    python run_adaptive.py manifest.json images.npy       # a batch already preprocessed (N,C,H,W)

A sample starts with S0's logits and adds R_1, R_2, ... while the Energy of its current logits,
``sum(softmax(logits) ** 2)``, is at or below the manifest's threshold; each R_i runs only on the
samples still going, so their work is really skipped (as ``CombinedStudent.adaptive`` does).

An image file becomes the networks' input as the manifest's ``preprocessing`` says: converted to
``color`` ("L" or "RGB"); its short side resized to ``resize`` (bilinear, antialiased) and the
centre ``image_size`` x ``image_size`` cropped. ``resize: null`` means the networks saw images at
their own size: an image of ``image_size`` x ``image_size`` is used as it is, any other is resized
(short side to ``image_size``) and centre-cropped the same way. Pixels are then scaled to [0, 1]
and normalised per channel, ``(x - mean) / std``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "reskd-export/1"
Part = Callable[[np.ndarray], np.ndarray]
COLORS = {"L": 1, "RGB": 3}  # Pillow's mode -> channels
PREPROCESSING_KEYS = ("image_size", "channels", "color", "mean", "std", "resize")
BATCH = 64  # images per forward pass in predict


def energy(logits: np.ndarray) -> np.ndarray:
    """Eq. 8 of ResKD: ``||softmax(logits)||_2^2`` per sample."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return np.asarray((p * p).sum(axis=1))


# --------------------------------------------------------------------------------------------
# Preprocessing: raw image files -> the networks' input
# --------------------------------------------------------------------------------------------


def check_preprocessing(spec: Any) -> dict[str, Any]:
    """The preprocessing fields, checked; a ``ValueError`` names the field and what is allowed.
    Keys other than :data:`PREPROCESSING_KEYS` (``class_names``) are left out."""
    if not isinstance(spec, dict):
        raise ValueError(f"preprocessing: must be a mapping of {', '.join(PREPROCESSING_KEYS)}")
    missing = [k for k in PREPROCESSING_KEYS if k not in spec]
    if missing:
        raise ValueError(f"preprocessing: missing {', '.join(missing)}")
    size, channels, color, resize = (spec[k] for k in ("image_size", "channels", "color", "resize"))
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"preprocessing.image_size: must be an integer >= 1, got {size!r}")
    if color not in COLORS:
        raise ValueError(f"preprocessing.color: must be 'L' or 'RGB', got {color!r}")
    if channels != COLORS[color]:
        raise ValueError(
            f"preprocessing.channels: must be {COLORS[color]} for color {color!r}, got {channels!r}"
        )
    for key in ("mean", "std"):
        values = spec[key]
        if (
            not isinstance(values, list | tuple)
            or len(values) != channels
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise ValueError(
                f"preprocessing.{key}: must be a list of {channels} numbers (one per channel), "
                f"got {values!r}"
            )
    if not all(v > 0 for v in spec["std"]):
        raise ValueError(f"preprocessing.std: every value must be > 0, got {spec['std']!r}")
    if resize is not None and (
        not isinstance(resize, int) or isinstance(resize, bool) or resize < size
    ):
        raise ValueError(
            f"preprocessing.resize: must be null or an integer >= image_size ({size}), "
            f"got {resize!r}"
        )
    return {
        "image_size": size,
        "channels": channels,
        "color": color,
        "mean": [float(v) for v in spec["mean"]],
        "std": [float(v) for v in spec["std"]],
        "resize": resize,
    }


def load_image(path: Path, preprocessing: dict[str, Any]) -> np.ndarray:
    """One image file as the networks' input, ``(channels, image_size, image_size)`` float32."""
    from PIL import Image, UnidentifiedImageError

    size = int(preprocessing["image_size"])
    short = int(preprocessing["resize"] or size)
    try:
        with Image.open(path) as opened:
            image = opened.convert(preprocessing["color"])
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(
            f"IMAGE: {path} is not an image file Pillow can read (PNG, JPEG, ...): {exc}"
        ) from exc
    width, height = image.size
    if (width, height) != (size, size) or preprocessing["resize"] is not None:
        # torchvision's Resize(short) then CenterCrop(size), on the same Pillow image
        if width <= height:
            new = (short, int(short * height / width))
        else:
            new = (int(short * width / height), short)
        if new != (width, height):
            image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)
        left = round((new[0] - size) / 2.0)
        top = round((new[1] - size) / 2.0)
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean = np.asarray(preprocessing["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing["std"], dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# The exported parts and Algorithm 2
# --------------------------------------------------------------------------------------------


def _load_part(path: Path, model_format: str) -> Part:
    if model_format == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ValueError(
                "model_format: onnx parts need ONNX Runtime (pip install onnxruntime)"
            ) from exc

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: np.asarray(session.run(None, {name: x})[0])
    try:
        import torch
    except ImportError as exc:
        raise ValueError(
            f"model_format: {model_format} parts need torch; an export with --format onnx "
            "runs with ONNX Runtime alone"
        ) from exc

    if model_format == "torchscript":
        import warnings

        with warnings.catch_warnings():  # TorchScript is deprecated upstream
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
    elif model_format == "exported-program":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(
            f"model_format: {model_format!r} is not onnx, torchscript or exported-program"
        )

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(x)).numpy())

    return run


@dataclass
class Prediction:
    path: str
    class_index: int
    class_name: str
    res_students: int  # res-students the image used (0 = S0 alone)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.class_name,
            "class_index": self.class_index,
            "res_students": self.res_students,
        }


class ExportedStudent:
    """The exported parts, the rule that combines them, and the images' preprocessing."""

    def __init__(self, manifest: Path) -> None:
        manifest = Path(manifest)
        if not manifest.is_file():
            raise ValueError(f"manifest: no file at {manifest} (write one with reskd export)")
        spec: dict[str, Any] = json.loads(manifest.read_text())
        if spec.get("format") != MANIFEST:
            raise ValueError(f"{manifest}: not a ResKD export manifest (format {MANIFEST})")
        self.spec = spec
        self.kind: str = spec["kind"]  # "combined" (S0 + R_i, adaptive) or "assisted" (S + A)
        self.threshold = float(spec.get("threshold", float("inf")))
        self.stages = len(spec["parts"]) - 1 if self.kind == "combined" else 0
        self.preprocessing: dict[str, Any] | None = spec.get("preprocessing")
        self.class_names: list[str] | None = spec.get("class_names")
        root = manifest.parent
        self.parts = [_load_part(root / p["file"], spec["model_format"]) for p in spec["parts"]]

    def adaptive(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and how many res-students each sample used (Algorithm 2)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        logits = self.parts[0](x).astype(np.float32)
        used = np.zeros(len(x), dtype=np.int64)
        active = np.arange(len(x))
        for part in self.parts[1:]:
            active = active[energy(logits[active]) <= self.threshold]
            if active.size == 0:
                break
            logits[active] += part(np.ascontiguousarray(x[active]))
            used[active] += 1
        return logits, used

    def full(self, x: np.ndarray) -> np.ndarray:
        """Every part on every sample (S_n without skipping)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(sum(part(x) for part in self.parts))

    def preprocess(self, paths: Sequence[Path]) -> np.ndarray:
        """Image files as one batch of the networks' input, ``(N, C, H, W)``."""
        if self.preprocessing is None:
            raise ValueError(
                "manifest: this export carries no preprocessing (an older reskd export); "
                "export the student again"
            )
        preprocessing = check_preprocessing(self.preprocessing)
        return np.stack([load_image(Path(p), preprocessing) for p in paths])

    def predict(self, paths: Sequence[Path]) -> list[Prediction]:
        """Each image's class and how many res-students it used, in batches of :data:`BATCH`."""
        found: list[Prediction] = []
        for start in range(0, len(paths), BATCH):
            batch = list(paths[start : start + BATCH])
            logits, used = self.adaptive(self.preprocess(batch))
            for path, c, u in zip(batch, logits.argmax(1), used, strict=True):
                name = self.class_names[int(c)] if self.class_names else str(int(c))
                found.append(Prediction(str(path), int(c), name, int(u)))
        return found


def report(predictions: Sequence[Prediction], *, stages: int, as_json: bool) -> str:
    """What ``predict`` prints: a line per image and the mean of res-students used, or JSON."""
    mean = sum(p.res_students for p in predictions) / max(1, len(predictions))
    if as_json:
        return json.dumps(
            {
                "predictions": [p.to_dict() for p in predictions],
                "mean_res_students": mean,
                "stages": stages,
            },
            indent=2,
        )
    lines = [f"{p.path}\t{p.class_name}\tres-students {p.res_students}" for p in predictions]
    lines.append(f"mean res-students used: {mean:.2f} of {stages} over {len(predictions)} image(s)")
    return "\n".join(lines)


def predict_main(argv: Sequence[str], *, manifest: Path, prog: str = "predict.py") -> int:
    """``predict.py IMAGE... [--json]`` with the export's ``manifest``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="classify image files with the exported ResKD student"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... files")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        student = ExportedStudent(manifest)
        predictions = student.predict([Path(p) for p in args.images])
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(report(predictions, stages=student.stages, as_json=args.json))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python run_adaptive.py manifest.json images.npy", file=sys.stderr)
        return 2
    student = ExportedStudent(Path(argv[0]))
    logits, used = student.adaptive(np.load(argv[1]))
    for k, (c, u) in enumerate(zip(logits.argmax(1), used, strict=True)):
        print(f"{k}\tclass {int(c)}\tres-students {int(u)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
