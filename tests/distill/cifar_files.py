"""Small files in the real CIFAR-10/100 python format (pickled dicts), for the loader tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, *, per_batch: int = 6, test: int = 5, seed: int = 0) -> dict:
    """Write ``cifar-10-batches-py`` with 5 training batches; return what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        _dump(
            folder / name,
            {
                "batch_label": name,
                "data": data,
                "labels": labels,
                "filenames": [f"{name}_{i}.png" for i in range(n)],
            },
        )
        written[name] = (data, labels)
    _dump(
        folder / "batches.meta",
        {
            "label_names": [f"class{i}" for i in range(10)],
            "num_cases_per_batch": per_batch,
            "num_vis": 3072,
        },
    )
    return written


def write_cifar100(root: Path, *, train: int = 12, test: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, n in (("train", train), ("test", test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        _dump(
            folder / name,
            {
                "data": data,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "filenames": [f"{name}_{i}.png" for i in range(n)],
            },
        )
        written[name] = (data, fine)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return written
