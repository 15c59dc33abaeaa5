"""A user's own data and teacher, made as a user makes them: scikit-learn's digits written as
16x16 PNG files in an ImageFolder (train/ and test/, class folders named by word), its own
mean/std, and a torchvision or hand-written network trained on it in a plain PyTorch loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import datasets, transforms

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 16


def write_folder(root: Path, *, per_class: int | None = None) -> Path:
    """train/<name>/*.png and test/<name>/*.png (80/20 per class), 16x16 grayscale."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for label, name in enumerate(NAMES):
        index = np.flatnonzero(digits.target == label)
        rng.shuffle(index)
        if per_class is not None:
            index = index[:per_class]
        cut = round(0.8 * len(index))
        for split, chosen in (("train", index[:cut]), ("test", index[cut:])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                image = Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.BILINEAR)
                image.save(folder / f"{i}.png")
    return root


def mean_std(root: Path) -> tuple[list[float], list[float]]:
    """The training images' own per-channel mean and std (RGB, as ImageFolder loads them)."""
    folder = datasets.ImageFolder(str(root / "train"), transform=transforms.ToTensor())
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    return [round(float(v), 4) for v in x.mean((0, 2, 3))], [
        round(float(v), 4) for v in x.std((0, 2, 3))
    ]


def loaders(root: Path, mean: list[float], std: list[float]) -> tuple[datasets.ImageFolder, ...]:
    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return (
        datasets.ImageFolder(str(root / "train"), transform=t),
        datasets.ImageFolder(str(root / "test"), transform=t),
    )


def train(net: nn.Module, root: Path, mean: list[float], std: list[float], *, epochs: int) -> float:
    """A plain PyTorch loop; the test accuracy (percent) measured with the same normalisation."""
    torch.manual_seed(0)
    train_set, test_set = loaders(root, mean, std)
    batches = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    # annealed to 0, so the last steps (and BatchNorm's running statistics) settle: at a constant
    # rate a tiny ResNet's eval accuracy swings by tens of points from one run to the next
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    for _ in range(epochs):
        net.train()
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            schedule.step()
    return accuracy(net, test_set)


@torch.no_grad()
def accuracy(net: nn.Module, data: datasets.ImageFolder) -> float:
    net.eval()
    x, y = next(iter(torch.utils.data.DataLoader(data, batch_size=len(data))))
    return 100.0 * float((net(x).argmax(1) == y).float().mean())


class OwnNet(nn.Module):
    """An architecture that is in no zoo: two convolutions with a gated skip, and a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 24, 3, padding=1)
        self.b = nn.Conv2d(24, 24, 3, padding=1)
        self.gate = nn.Parameter(torch.tensor(0.5))
        self.head = nn.Linear(24 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.nn.functional.max_pool2d(h + self.gate * torch.relu(self.b(h)), 4)
        return self.head(h.flatten(1))


ARCH = "resnet18"  # torchvision's smallest ResNet; at 16x16 an epoch of 480 images takes seconds


class Own:
    """The user's side, made once per session: the folder (60 digits a class), its own mean/std,
    a torchvision ResNet-18 and a TorchScript ``OwnNet`` trained on it in a plain loop, with the
    test accuracies measured outside the product."""

    def __init__(self, root: Path) -> None:
        import torchvision

        torch.set_num_threads(2)
        self.data = write_folder(root / "data", per_class=60)
        self.mean, self.std = mean_std(self.data)
        net = torchvision.models.get_model(ARCH, num_classes=10)
        self.tv_accuracy = train(net, self.data, self.mean, self.std, epochs=8)
        self.tv_file = root / f"{ARCH}.pt"
        torch.save(net.state_dict(), self.tv_file)
        scripted = OwnNet()
        self.ts_accuracy = train(scripted, self.data, self.mean, self.std, epochs=8)
        self.ts_file = root / "own.ts"
        torch.jit.save(torch.jit.script(scripted), str(self.ts_file))
