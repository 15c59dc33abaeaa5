from __future__ import annotations

import pytest
import torch
import torchvision

from space.zoo import MODELS, Backbone, create_model, load_torchvision_state_dict

# Every input the datasets give: digits, MNIST, CIFAR, Tiny-ImageNet, ImageNet.
INPUTS = [(1, 8), (1, 28), (3, 32), (3, 64), (3, 224)]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("chans", "size"), INPUTS, ids=[f"{c}x{s}x{s}" for c, s in INPUTS])
def test_every_model_on_every_input(name: str, chans: int, size: int) -> None:
    torch.manual_seed(0)
    width = 0.25 if MODELS[name].family == "darts" else 1.0  # DARTS's 20-cell nets are slow
    model = create_model(name, num_classes=7, in_chans=chans, input_size=size, width=width)
    model.eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        composed = model.forward_head(features)
    assert out.shape == (2, 7)
    torch.testing.assert_close(composed, out)
    assert features.shape[1] == model.num_features
    if not isinstance(model, Backbone):
        return
    with torch.no_grad():
        stages = model.forward_stages(x)
    assert tuple(stages) == model.stage_names
    for stage, fmap in stages.items():
        assert fmap.shape[1] == model.stage_channels[stage]
    torch.testing.assert_close(stages[model.stage_names[-1]], features)
    assert features.shape[1] == model.num_features


def test_cifar_resnet_params_match_the_paper() -> None:
    # ResKD Table II: ResNet-20 0.270M / 0.276M params (CIFAR-10 / CIFAR-100), ResNet-110 1.728M.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(create_model("resnet20", num_classes=10)) / 1e6, 3) == 0.270
    assert round(count(create_model("resnet20", num_classes=100)) / 1e6, 3) == 0.276
    assert round(count(create_model("resnet110", num_classes=10)) / 1e6, 3) == 1.728
    s1 = count(create_model("resnet20", num_classes=10)) + count(
        create_model("resnet14", num_classes=10)
    )
    assert round(s1 / 1e6, 3) == 0.442  # Res20-14


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_weights_load_and_give_torchvision_outputs(arch: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(num_classes=5).eval()
    ours = create_model(arch, num_classes=5, input_size=224).eval()
    load_torchvision_state_dict(ours, reference.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_width_multiplier_scales_channels() -> None:
    full = create_model("resnet18", num_classes=10, input_size=224)
    half = create_model("resnet18", num_classes=10, input_size=224, width=0.5)
    quarter = create_model("resnet18", num_classes=10, input_size=224, width=0.25)
    assert list(full.stage_channels.values()) == [64, 128, 256, 512]
    assert list(half.stage_channels.values()) == [32, 64, 128, 256]
    assert list(quarter.stage_channels.values()) == [16, 32, 64, 128]
    cifar_half = create_model("resnet20", num_classes=10, width=0.5)
    assert list(cifar_half.stage_channels.values()) == [8, 16, 32]


def test_stem_follows_the_input_size() -> None:
    small = create_model("resnet18", num_classes=10, input_size=32)
    large = create_model("resnet18", num_classes=10, input_size=224)
    assert small.stem.conv1.kernel_size == (3, 3) and "maxpool" not in small.stem._modules
    assert large.stem.conv1.kernel_size == (7, 7) and "maxpool" in large.stem._modules
    forced = create_model("resnet18", num_classes=10, input_size=32, stem="imagenet")
    assert forced.stem.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "resnet19"}, "model"),
        ({"name": "resnet20", "num_classes": 0}, "num_classes"),
        ({"name": "resnet20", "width": 0.0}, "width"),
        ({"name": "resnet18", "stem": "tiny"}, "stem"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    args = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:") as info:
        create_model(args.pop("name"), **args)
    if field == "model":
        assert "resnet20" in str(info.value) and "resnet110" in str(info.value)


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "darts_v2"])
def test_zoo_models_compile_with_torch_jit_script(name: str) -> None:
    """TorchScript compiles them (it once failed on a ``tuple[str, ...]`` property and on a
    genotype cell indexing its ModuleList) and computes what eager PyTorch computes."""
    import warnings

    from distill.catalog import dataset_info
    from distill.models import build_model

    model = build_model(name, dataset_info("cifar10"), width=0.25).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
