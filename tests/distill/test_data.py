from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from distill.catalog import DATASETS, DIGITS, DatasetEntry, DatasetInfo
from distill.data import (
    DataBundle,
    DatasetError,
    LoadOptions,
    TensorImages,
    ValidationSplit,
    dataset_info,
    dataset_labels,
    load_dataset,
    register_dataset,
    train_transform,
    validation_split,
)
from distill.data import (
    test_transform as plain_view,  # not a test: the test split's view
)
from tests.distill.cifar_files import write_cifar10, write_cifar100


def _unnormalize(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]


def test_mnist5k_is_the_real_shipped_subset() -> None:
    data = load_dataset("mnist5k", augment=False)
    assert (len(data.train), len(data.test)) == (4000, 1000)
    x, _ = data.test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert set(dataset_labels(data.test)) == set(range(10))
    # stratified: every class keeps ~its 20% share in the test split
    counts = Counter(dataset_labels(data.test))
    assert min(counts.values()) >= 80
    # normalisation: roughly zero mean, unit std over the test images
    stack = torch.stack([data.test[i][0] for i in range(300)])
    assert abs(stack.mean().item()) < 0.1 and 0.8 < stack.std().item() < 1.2
    # the fixed split is the same on every load
    again = load_dataset("mnist5k", augment=False)
    assert (
        torch.equal(again.test[17][0], data.test[17][0]) and again.test[17][1] == data.test[17][1]
    )


def test_digits_is_the_real_shipped_set_with_shift_augmentation() -> None:
    data = load_dataset("digits")
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert data.train[0][0].shape == (1, 8, 8)
    assert data.augmented and not load_dataset("digits", augment=False).augmented
    torch.manual_seed(0)
    views = {tuple(data.train[3][0].flatten().tolist()) for _ in range(12)}
    assert len(views) > 1  # random crops differ
    assert torch.equal(data.train_eval[3][0], data.train_eval[3][0])


def test_cifar10_through_torchvisions_loader(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    assert (len(data.train), len(data.test)) == (30, 5)
    # test view: exactly the written pixels, normalised, in CHW order
    x, y = data.test[2]
    raw = torch.from_numpy(written["test_batch"][0][2].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(
        _unnormalize(x, data.info.mean, data.info.std), raw, atol=1e-5, rtol=0
    )
    assert y == written["test_batch"][1][2]
    # training labels come in batch order 1..5
    assert dataset_labels(data.train)[6] == written["data_batch_2"][1][0]
    # the training protocol: pad-4 random crops and flips differ from the plain view
    torch.manual_seed(0)
    views = [data.train[0][0] for _ in range(8)]
    assert all(v.shape == (3, 32, 32) for v in views)
    assert any(not torch.equal(v, data.train_eval[0][0]) for v in views)


def test_cifar100_through_torchvisions_loader(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    data = load_dataset("cifar100", root=tmp_path, augment=False)
    assert data.info.num_classes == 100
    assert (len(data.train), len(data.test)) == (12, 4)
    assert dataset_labels(data.train) == written["train"][1]
    x, _ = data.train[5]
    raw = torch.from_numpy(written["train"][0][5].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(
        _unnormalize(x, data.info.mean, data.info.std), raw, atol=1e-5, rtol=0
    )


def test_missing_cifar_root_names_path_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", root=root)
    message = str(info.value)
    assert str(root) in message and "cifar-10-batches-py" in message and "data_batch_1" in message


def test_incomplete_cifar_root_names_the_missing_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


def test_malformed_cifar_file_is_reported(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="malformed") as info:
        load_dataset("cifar100", root=tmp_path)
    assert "cifar-100-python" in str(info.value)


def test_checksums_are_checked_when_asked(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(DatasetError, match="corrupted"):
        load_dataset("cifar10", root=tmp_path, verify_checksums=True)


def test_root_is_required_for_local_datasets() -> None:
    with pytest.raises(DatasetError, match="^root:"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'.*mnist5k"):
        load_dataset("svhn")


def _png(path: Path, value: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size + 8, 3), value, dtype=np.uint8)).save(path)


def test_imagefolder_imagenet_layout(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c, cls in enumerate(["n01", "n02", "n03"]):
            for i in range(2):
                _png(tmp_path / split / cls / f"{i}.png", 40 * c + i)
    data = load_dataset("imagefolder", root=tmp_path, image_size=32)
    assert data.info.num_classes == 3 and data.info.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.test)) == (6, 6)
    x, y = data.test[5]
    assert x.shape == (3, 32, 32) and y == 2
    assert data.train[0][0].shape == (3, 32, 32)  # random resized crop to the same size


def test_imagefolder_tiny_imagenet_val_layout(tmp_path: Path) -> None:
    for cls in ("n01", "n02"):
        _png(tmp_path / "train" / cls / "images" / "a.JPEG", 10)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", 20)
    _png(tmp_path / "val" / "images" / "val_1.JPEG", 30)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t0\t0\t10\t10\n"
    )
    data = load_dataset("imagefolder", root=tmp_path, image_size=16)
    assert [data.test[i][1] for i in range(2)] == [1, 0]


def test_imagenet_and_tiny_imagenet_are_names_with_their_protocols(tmp_path: Path) -> None:
    """The names users type are image folders with the dataset's own protocol."""
    for cls in ("n01", "n02"):
        _png(tmp_path / "train" / cls / "images" / "a.JPEG", 10, size=64)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", 20, size=64)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\n")
    tiny = load_dataset("tiny-imagenet", root=tmp_path, augment=True)
    # ResKD section IV-A: Tiny-ImageNet's 64x64 images are trained and tested at 224 (Table VII's
    # 4,117 MFLOPs for ResNet-50 are its 224-pixel cost)
    assert tiny.info.name == "tiny-imagenet" and tiny.info.input_shape == (3, 224, 224)
    assert tiny.train[0][0].shape == (3, 224, 224) and tiny.test[0][0].shape == (3, 224, 224)
    assert tiny.test[0][1] == 1
    assert dataset_info("tiny-imagenet").num_classes == 200
    info = dataset_info("imagenet")
    assert (info.num_classes, info.input_shape) == (1000, (3, 224, 224))
    net = load_dataset("imagenet", root=tmp_path)  # the same layout, ImageNet's 224 protocol
    assert net.test[0][0].shape == (3, 224, 224)
    with pytest.raises(DatasetError, match="'imagenet' cannot be downloaded"):
        load_dataset("imagenet", root=tmp_path, download=True)


def test_imagefolder_bad_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train does not exist.*train/<class>"):
        load_dataset("imagefolder", root=tmp_path)


def test_validation_split_is_seeded_uniform_and_recorded() -> None:
    a = validation_split(1000, seed=3, size=100)
    assert a == validation_split(1000, seed=3, size=100)
    assert a.indices != validation_split(1000, seed=4, size=100).indices
    assert len(set(a.indices)) == 100 and all(0 <= i < 1000 for i in a.indices)
    restored = ValidationSplit.from_dict(a.to_dict())
    assert restored == a and restored.digest == a.digest
    tampered = {**a.to_dict(), "indices": [0, *a.indices[1:]]}
    with pytest.raises(DatasetError, match="digest"):
        ValidationSplit.from_dict(tampered)
    assert validation_split(1000, seed=0, fraction=0.1).size == 100
    # uniform: the mean index of a large sample sits near the middle
    big = validation_split(10000, seed=0, size=2000)
    assert abs(np.mean(big.indices) - 5000) < 300


def test_validation_split_subsets_the_training_set() -> None:
    data = load_dataset("digits", augment=False)
    split = validation_split(len(data.train_eval), seed=0, size=50)
    dv = split.subset(data.train_eval)
    assert len(dv) == 50
    assert torch.equal(dv[0][0], data.train_eval[split.indices[0]][0])
    with pytest.raises(DatasetError, match="drawn from 1437"):
        split.subset(data.test)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"size": 0}, "^size:"), ({"fraction": 1.5}, "^fraction:"), ({}, "exactly one")],
)
def test_validation_split_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        validation_split(10, seed=0, **kwargs)


def test_the_built_in_datasets_are_entry_points_listed_without_torch() -> None:
    """Built-ins register as a plug-in does (pyproject.toml's reskd.datasets), and listing them
    imports no torch (their loaders are imported on the first load)."""
    probe = (
        "import sys; from importlib.metadata import entry_points; "
        "from distill.catalog import DATASETS; "
        "points = {e.name for e in entry_points(group='reskd.datasets')}; "
        "print(list(DATASETS), points == set(DATASETS), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    names = ["mnist5k", "digits", "cifar10", "cifar100", "imagefolder", "imagenet", "tiny-imagenet"]
    assert out.stdout.strip() == f"{names} True False", out.stderr


def test_a_dataset_registered_in_code_loads_with_its_own_hooks() -> None:
    """A plug-in's entry: its info, its loader and its augmentation, all used by name."""
    images = torch.arange(2 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4) * 7
    labels = torch.tensor([0, 1])

    def load(dataset: DatasetEntry, root: Path | None, options: LoadOptions) -> DataBundle:
        assert root is None
        train = TensorImages(images, labels, train_transform(dataset, augment=options.augment))
        plain = TensorImages(images, labels, plain_view(dataset.info))
        return DataBundle(dataset.info, train, plain, plain, options.augment)

    info = DatasetInfo("flips", 2, 1, 4, (0.0,), (1.0,), False, "two 4x4 images")
    entry = DatasetEntry(info, load, augmentation=lambda size: [v2.RandomHorizontalFlip(p=1.0)])
    register_dataset(entry)
    try:
        data = load_dataset("flips")
        assert data.info.name == "flips" and len(data.test) == 2
        assert torch.equal(data.train[1][0], data.test[1][0].flip(-1))  # its own augmentation
        torch.testing.assert_close(data.test[1][0][0, 0], images[1, 0, 0].float() / 255)
        with pytest.raises(DatasetError, match="'flips' is already registered"):
            register_dataset(entry)
        with pytest.raises(DatasetError, match="unknown dataset 'svhn'.*tiny-imagenet, flips"):
            load_dataset("svhn")
        copy = register_dataset(DIGITS.with_info(name="digits-again", description="a copy"))
        assert len(load_dataset(copy.info.name, augment=False).test) == 360
    finally:
        DATASETS.unregister("flips")
        DATASETS.unregister("digits-again")
    assert "flips" not in DATASETS
