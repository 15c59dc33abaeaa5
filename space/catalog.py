"""The zoo's model names, without torch: the command line offers them before anything heavy is
imported. ``space.zoo`` builds its entries from these lists and checks it built exactly them."""

from __future__ import annotations

CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # He et al.'s CIFAR ResNets (6n + 2)
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")
GENOTYPE_NAMES = ("darts_v1", "darts_v2", "stacnas_imagenet")  # space.genotypes.GENOTYPES
MODEL_NAMES: tuple[str, ...] = (
    *(f"resnet{d}" for d in CIFAR_DEPTHS),
    *TORCHVISION_ARCHS,
    *GENOTYPE_NAMES,
)
