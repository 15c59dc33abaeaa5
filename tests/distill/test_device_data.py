"""Data on the device (``distill.device_data``): an in-memory uint8 set served in batches by index,
its augmentation batched. Here the device is the CPU: the same code runs on a CUDA device, where
``fit`` uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from distill.batching import Indexed, TensorBatches, loader
from distill.data import load_dataset
from distill.device_data import Augment, DeviceImages, on_device, parse_view
from distill.distributed import World
from tests.distill.cifar_files import write_cifar10

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=20, test=16)
    return root


def _batches(batches: object) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in b) for b in batches]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_unaugmented_batches_on_the_device_are_the_loaders_batches(
    name: str, cifar_root: Path
) -> None:
    """Without a random step the device path serves, for the same seed, exactly what the
    ``DataLoader`` serves from the per-sample transform: same order, same floats."""
    root = cifar_root if name == "cifar10" else None
    data = load_dataset(name, root=root, augment=False)
    subset = Subset(data.train, list(range(3, 83)))  # positions through a Subset, too
    device = loader(Indexed(subset), batch_size=16, shuffle=True,
                    generator=torch.Generator().manual_seed(7), device=CPU)  # fmt: skip
    assert isinstance(device, TensorBatches) and isinstance(device.source, DeviceImages)
    reference = DataLoader(Indexed(subset), batch_size=16, shuffle=True,
                           generator=torch.Generator().manual_seed(7))  # fmt: skip
    for _epoch in range(2):  # the generator's state carries over between epochs alike
        got, expected = _batches(device), _batches(reference)
        assert len(got) == len(expected) == 5
        for (x, y, i), (x_ref, y_ref, i_ref) in zip(got, expected, strict=True):
            assert torch.equal(i, i_ref) and torch.equal(y, y_ref)
            assert torch.equal(x, x_ref)


def test_each_ranks_share_is_its_part_of_the_global_batch() -> None:
    data = load_dataset("digits", augment=False)
    whole = _batches(loader(Indexed(data.train), batch_size=10, shuffle=True,
                            generator=torch.Generator().manual_seed(1), device=CPU))  # fmt: skip
    for rank in range(3):
        share = _batches(loader(Indexed(data.train), batch_size=10, shuffle=True,
                                generator=torch.Generator().manual_seed(1), device=CPU,
                                world=World(rank, 3)))  # fmt: skip
        for (x, _, i), (x_all, _, i_all) in zip(share, whole, strict=True):
            assert torch.equal(i, i_all[rank::3]) and torch.equal(x, x_all[rank::3])


def test_the_datasets_declared_augmentation_is_what_the_device_runs(cifar_root: Path) -> None:
    cifar = load_dataset("cifar10", root=cifar_root)
    assert parse_view(cifar.train.transform).augment == Augment(pad=4, flip=0.5)
    digits = load_dataset("digits")
    assert parse_view(digits.train.transform).augment == Augment(pad=1, flip=0.0)  # shifts only
    mnist_like = v2.Compose([v2.RandomResizedCrop(8), v2.ToImage()])
    assert parse_view(mnist_like) is None  # no batched form: the per-sample path
    assert on_device(cifar.train, CPU) is on_device(cifar.train, CPU)  # moved once


def _locate(original: torch.Tensor, crop: torch.Tensor, pad: int) -> set[tuple[int, int, bool]]:
    """Every (row offset, column offset, flipped) that makes ``crop`` from ``original``."""
    padded = torch.nn.functional.pad(original, (pad,) * 4)
    h, w = original.shape[-2:]
    found = set()
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[..., dy : dy + h, dx : dx + w]
            for flipped in (False, True):
                if torch.equal(window.flip(-1) if flipped else window, crop):
                    found.add((dy, dx, flipped))
    return found


def test_batched_crops_and_flips_follow_the_documented_distributions() -> None:
    """Each augmented image is the zero-padded original cropped at an offset in 0..2*pad in each
    direction and mirrored or not; over 4000 draws the offsets are uniform over the 9 x 9
    positions and about half the images (drawn per sample) are mirrored."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (8, 3, 6, 6), dtype=torch.uint8, generator=g)  # no zeros
    augment = Augment(pad=4, flip=0.5)
    offsets, flips = augment.draw(4000, torch.Generator().manual_seed(1))
    assert offsets.shape == (4000, 2) and offsets.min() == 0 and offsets.max() == 8
    counts = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81).float()
    expected = 4000 / 81
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 125, chi2  # 80 degrees of freedom: p < 0.001 beyond 124.8
    assert abs(float(flips.float().mean()) - 0.5) < 0.03
    source = images.repeat(500, 1, 1, 1)  # 4000 images, each one of the 8
    out = augment.apply(source, offsets, flips)
    assert out.shape == source.shape and out.dtype == torch.uint8
    for k in range(0, 4000, 97):  # each one is what its draw says, and nothing else fits
        where = _locate(source[k], out[k], 4)
        assert (int(offsets[k, 0]), int(offsets[k, 1]), bool(flips[k])) in where
        assert len(where) == 1
    flipped_one = augment.apply(images[:1], torch.tensor([[4, 4]]), torch.tensor([True]))
    assert torch.equal(flipped_one[0], images[0].flip(-1))  # the centre crop, mirrored


def test_augmented_device_batches_are_normalised_crops_of_the_set(cifar_root: Path) -> None:
    """Through the loader: an augmented CIFAR batch on the device is, image by image, a crop
    (and maybe a mirror) of its padded original, scaled and normalised as the test view is."""
    cifar = load_dataset("cifar10", root=cifar_root)
    held = on_device(cifar.train, CPU)
    assert held is not None
    batches = loader(Indexed(cifar.train), batch_size=32, shuffle=True,
                     generator=torch.Generator().manual_seed(3), device=CPU)  # fmt: skip
    x, _, index = next(iter(batches))
    mean = torch.tensor(held.view.mean).view(-1, 1, 1)
    std = torch.tensor(held.view.std).view(-1, 1, 1)
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
    flips = 0
    for k in range(len(index)):
        where = _locate(held.images[index[k]], pixels[k], 4)
        assert where, f"sample {k} is no crop of its image"
        flips += any(f for _, _, f in where)
    assert 0 < flips < len(index)  # drawn per sample
