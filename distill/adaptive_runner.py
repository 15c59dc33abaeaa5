"""Run an exported ResKD student (``reskd export``) without this package: Algorithm 2 over the
exported parts, with NumPy and the part's runtime (ONNX Runtime, TorchScript or a
``torch.export`` program). ``reskd export`` copies this file next to the parts as
``run_adaptive.py``:

    python run_adaptive.py manifest.json images.npy     # prints each sample's class and R count

A sample starts with S0's logits and adds R_1, R_2, ... while the Energy of its current logits,
``sum(softmax(logits) ** 2)``, is at or below the manifest's threshold; each R_i runs only on the
samples still going, so their work is really skipped (as ``CombinedStudent.adaptive`` does).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "reskd-export/1"
Part = Callable[[np.ndarray], np.ndarray]


def energy(logits: np.ndarray) -> np.ndarray:
    """Eq. 8 of ResKD: ``||softmax(logits)||_2^2`` per sample."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return np.asarray((p * p).sum(axis=1))


def _load_part(path: Path, model_format: str) -> Part:
    if model_format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: np.asarray(session.run(None, {name: x})[0])
    import torch

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


class ExportedStudent:
    """The exported parts and the rule that combines them."""

    def __init__(self, manifest: Path) -> None:
        spec: dict[str, Any] = json.loads(Path(manifest).read_text())
        if spec.get("format") != MANIFEST:
            raise ValueError(f"{manifest}: not a ResKD export manifest (format {MANIFEST})")
        self.spec = spec
        self.kind: str = spec["kind"]  # "combined" (S0 + R_i, adaptive) or "assisted" (S + A)
        self.threshold = float(spec.get("threshold", float("inf")))
        root = Path(manifest).parent
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
