from __future__ import annotations

import json

import pytest
import torch

from space.flops import count
from space.genotypes import DARTS_V1, DARTS_V2, GENOTYPES, STACNAS_IMAGENET, Genotype
from space.network import GenotypeNetwork, genotype_macs
from space.operations import GROUPS, OPS, PRIMITIVES, op_macs
from space.supernet import NetShape, Supernet, argmax_genotype, uniform_candidates

SHAPES = [(16, 32, 1), (16, 32, 2), (8, 15, 1), (8, 15, 2), (12, 7, 2), (6, 1, 1)]


@pytest.mark.parametrize("name", PRIMITIVES)
def test_each_operations_analytic_mflops_equal_the_product_counter(name: str) -> None:
    for c, size, stride in SHAPES:
        op = OPS[name](c, stride, True)
        counted = count(op, input_shape=(c, size, size)).macs
        assert op_macs(name, c, size, stride) == counted, (name, c, size, stride)
        out = op(torch.randn(2, c, size, size))
        assert out.shape == (2, c, (size - 1) // stride + 1, (size - 1) // stride + 1)


def test_operations_are_the_reference_darts_definitions() -> None:
    sep = OPS["sep_conv_3x3"](8, 1, True)
    convs = [m for m in sep.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4  # separable conv stacked twice: (depthwise, pointwise) x 2
    assert [c.groups for c in convs] == [8, 1, 8, 1]
    dil = [m for m in OPS["dil_conv_5x5"](8, 2, True).modules() if isinstance(m, torch.nn.Conv2d)]
    assert dil[0].dilation == (2, 2) and dil[0].padding == (4, 4) and dil[0].stride == (2, 2)
    assert type(OPS["skip_connect"](8, 2, True)).__name__ == "FactorizedReduce"
    pool = OPS["avg_pool_3x3"](8, 1, True)
    assert pool.count_include_pad is False
    # Corner of a constant map: averaging without the padding keeps the constant.
    assert torch.allclose(pool(torch.ones(1, 8, 5, 5)), torch.ones(1, 8, 5, 5))
    assert {op for members in GROUPS.values() for op in members} == set(PRIMITIVES)


def test_genotype_round_trips_through_json() -> None:
    for genotype in GENOTYPES.values():
        text = genotype.to_json()
        assert Genotype.from_json(text) == genotype
        assert json.loads(text)["normal"][0] == list(genotype.normal[0])


def test_a_bad_genotype_names_what_is_wrong() -> None:
    raw = DARTS_V2.to_dict()
    raw["normal"][3] = ["conv_7x7", 1]
    with pytest.raises(ValueError, match=r"genotype.normal\[3\]: operation 'conv_7x7'"):
        Genotype.from_dict(raw)
    raw = DARTS_V2.to_dict()
    raw["reduce"][0] = ["max_pool_3x3", 2]
    with pytest.raises(ValueError, match=r"genotype.reduce\[0\]: input 2 must be < 2"):
        Genotype.from_dict(raw)


@pytest.mark.parametrize("genotype", list(GENOTYPES.values()), ids=list(GENOTYPES))
@pytest.mark.parametrize(
    ("chans", "size", "channels", "layers"),
    [(3, 32, 16, 8), (3, 224, 16, 6), (1, 28, 8, 5), (1, 8, 4, 3)],
    ids=["cifar", "imagenet", "mnist", "digits"],
)
def test_darts_genotypes_build_run_and_count_as_the_layout_says(
    genotype: Genotype, chans: int, size: int, channels: int, layers: int
) -> None:
    net = GenotypeNetwork(
        genotype,
        channels=channels,
        layers=layers,
        num_classes=10,
        in_chans=chans,
        input_size=size,
        auxiliary=True,
        drop_path_prob=0.2,
    )
    net.train()
    net.schedule(epoch=5, epochs=10)
    out = net(torch.randn(2, chans, size, size))
    assert out.shape == (2, 10) and net.aux_logits is not None and net.aux_logits.shape == (2, 10)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, chans, size, size)).shape == (1, 10)
    assert net.aux_logits is None
    counted = count(net, input_shape=(chans, size, size)).macs
    assert counted == genotype_macs(
        genotype, channels=channels, layers=layers, num_classes=10, in_chans=chans, input_size=size
    )


def test_published_darts_networks_are_the_papers_size() -> None:
    # DARTS (Liu et al.): DARTS_V2 on CIFAR-10 has 3.3 M parameters (36 channels, 20 cells,
    # auxiliary head not counted); on ImageNet (48 channels, 14 cells) 4.7 M and 574 M MACs.
    from space.zoo import create_model

    cifar = create_model("darts_v2", num_classes=10, in_chans=3, input_size=32)
    params = sum(p.numel() for p in cifar.parameters()) / 1e6
    assert 3.2 < params < 3.4, params
    imagenet = create_model("darts_v2", num_classes=1000, in_chans=3, input_size=224)
    c = count(imagenet, input_shape=(3, 224, 224))
    assert 4.6 < c.mparams < 4.8, c.mparams
    assert abs(c.mflops - 574) / 574 < 0.06, c.mflops  # adaptive pooling head, thop's convention


def test_stacnas_imagenet_network_is_reskds_table7_r1() -> None:
    """ResKD's R1 in Table VII is StacNAS's ImageNet network (S1 - S0): 17.40 - 11.69 = 5.71 M
    parameters and 2454 - 1821 = 633 MFLOPs on ImageNet, 16.38 - 11.28 = 5.10 M and 2453 - 1821
    = 632 on Tiny-ImageNet (200 classes, 224 px); StacNAS's own table: 5.7 M."""
    from space.zoo import create_model

    imagenet = count(create_model("stacnas_imagenet", num_classes=1000, input_size=224),
                     input_shape=(3, 224, 224))  # fmt: skip
    assert imagenet.params == 5_715_040  # the transcription, pinned
    assert imagenet.mparams == pytest.approx(5.71, rel=0.02)
    assert imagenet.mflops == pytest.approx(633, rel=0.02)
    tiny = GenotypeNetwork(STACNAS_IMAGENET, channels=48, layers=14, num_classes=200,
                           in_chans=3, input_size=224, stem="imagenet")  # fmt: skip
    c = count(tiny, input_shape=(3, 224, 224))
    assert c.mparams == pytest.approx(5.10, rel=0.02)
    assert c.mflops == pytest.approx(632, rel=0.02)
    # every node takes one edge from each previous cell; two identities, the rest 3x3 sep convs
    for edges in (STACNAS_IMAGENET.normal, STACNAS_IMAGENET.reduce):
        assert [i for _, i in edges] == [0, 1] * 4
    assert [op for op, _ in STACNAS_IMAGENET.normal].count("skip_connect") == 2
    assert {op for op, _ in STACNAS_IMAGENET.reduce} == {"sep_conv_3x3"}


def test_the_auxiliary_head_is_dartss_and_not_counted_as_the_networks_parameters() -> None:
    """DARTS's AuxiliaryHeadCIFAR pools the 8x8 maps with AvgPool2d(5, stride=3) to 2x2, and its
    count_parameters_in_MB leaves the auxiliary head out: DARTS_V2 is 3,349,342 either way."""
    kwargs = {"channels": 36, "layers": 20, "num_classes": 10, "in_chans": 3, "input_size": 32}
    plain = GenotypeNetwork(DARTS_V2, **kwargs)
    with_aux = GenotypeNetwork(DARTS_V2, auxiliary=True, **kwargs)
    assert count(plain, input_shape=(3, 32, 32)).params == 3_349_342
    assert count(with_aux, input_shape=(3, 32, 32)).params == 3_349_342
    assert with_aux.auxiliary is not None
    pool = with_aux.auxiliary.features[1]
    assert isinstance(pool, torch.nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (5, 3)
    assert sum(p.numel() for p in with_aux.auxiliary.parameters()) > 0  # it exists, uncounted


def test_supernet_expected_mflops_is_differentiable_and_exact_for_a_decided_architecture() -> None:
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(PRIMITIVES))
    expected = net.expected_mflops()
    expected.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    # Put (almost) all weight on DARTS_V1's operation on its edges and on 'none' elsewhere: the
    # expectation then equals the counted MFLOPs of DARTS_V1's network at this shape.
    with torch.no_grad():
        for kind, edges in (("normal", DARTS_V1.normal), ("reduce", DARTS_V1.reduce)):
            alpha = net.alphas[kind]
            alpha.fill_(-1e4)
            alpha[:, PRIMITIVES.index("none")] = 1e4
            offset = {0: 0, 1: 2, 2: 5, 3: 9}
            for k, (op, inp) in enumerate(edges):
                e = offset[k // 2] + inp
                alpha[e, PRIMITIVES.index("none")] = -1e4
                alpha[e, PRIMITIVES.index(op)] = 1e4
    # The estimate is the derived network's counted MFLOPs (it used to count each kept edge at
    # 2 / (inputs of its node) of its cost and 'none' at 0: biased low).
    derived = GenotypeNetwork(
        DARTS_V1, channels=4, layers=3, num_classes=10, in_chans=1, input_size=8
    )
    counted = count(derived, input_shape=(1, 8, 8)).macs
    assert float(net.expected_mflops().detach()) == pytest.approx(counted / 1e6, rel=1e-6)
    assert argmax_genotype(net.probabilities()) == Genotype.of(
        sorted(DARTS_V1.normal[:2], key=lambda e: e[1])
        + sorted(DARTS_V1.normal[2:4], key=lambda e: e[1])
        + sorted(DARTS_V1.normal[4:6], key=lambda e: e[1])
        + sorted(DARTS_V1.normal[6:], key=lambda e: e[1]),
        sorted(DARTS_V1.reduce[:2], key=lambda e: e[1])
        + sorted(DARTS_V1.reduce[2:4], key=lambda e: e[1])
        + sorted(DARTS_V1.reduce[4:6], key=lambda e: e[1])
        + sorted(DARTS_V1.reduce[6:], key=lambda e: e[1]),
    )


def test_supernet_runs_and_separates_weights_from_architecture() -> None:
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(("none", "max_pool_3x3", "sep_conv_3x3")))
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    arch = {id(p) for p in net.arch_parameters()}
    assert arch and not arch & {id(p) for p in net.weight_parameters()}
    assert len(arch) + len(net.weight_parameters()) == len(list(net.parameters()))


def _random_supernet(seed: int, edge_strength: str = "max") -> Supernet:
    shape = NetShape.of(channels=4, layers=4, num_classes=10, in_chans=1, input_size=8)
    torch.manual_seed(seed)
    net = Supernet(shape, uniform_candidates(PRIMITIVES), edge_strength=edge_strength)  # type: ignore[arg-type]
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.normal_(0.0, 1.0)
    return net


def test_raising_only_none_does_not_make_the_expected_network_cheaper() -> None:
    """The old estimate fell from 0.530 to 0.271 MFLOPs as w(none) rose from 0.15 to 0.9, with the
    same derived network: the FLOPs penalty could be met without changing the architecture."""
    none = PRIMITIVES.index("none")
    for strength in ("non_zero", "max"):
        net = _random_supernet(0, strength)
        seen = []
        for level in (-3.0, 0.0, 2.0, 5.0):  # w(none) from about 0.01 to about 0.95 per edge
            with torch.no_grad():
                for alpha in net.arch_parameters():
                    alpha[:, none] = level
            seen.append((net.genotype(), float(net.expected_mflops().detach())))
        genotypes = {g for g, _ in seen}
        if strength == "non_zero":  # one level of 'none' on every edge keeps the ranking
            assert len(genotypes) == 1
        for genotype, expected in seen:  # E is always the cost of what is derived
            assert expected == pytest.approx(net.mflops_of(genotype), rel=1e-6)
        if len(genotypes) == 1:
            assert max(e for _, e in seen) - min(e for _, e in seen) < 1e-5


def test_expected_mflops_is_the_derived_networks_counted_mflops_over_random_alphas() -> None:
    """Tolerance: 1e-6 relative, float32 rounding. The value is the derived network's cost by
    construction (straight-through); the product counter is what it must agree with. The smooth
    part that gives the gradient agrees on average (over 24 random architectures) within 15%."""
    errors = []
    nets = {s: _random_supernet(0, s) for s in ("max", "non_zero")}
    for seed in range(24):
        net = nets["max" if seed % 2 else "non_zero"]
        torch.manual_seed(seed)
        with torch.no_grad():
            for alpha in net.arch_parameters():
                alpha.normal_(0.0, 1.0)
                alpha.grad = None
        genotype = net.genotype()
        derived = GenotypeNetwork(
            genotype, channels=4, layers=4, num_classes=10, in_chans=1, input_size=8
        )
        counted = count(derived, input_shape=(1, 8, 8)).mflops
        expected = net.expected_mflops()
        assert float(expected.detach()) == pytest.approx(counted, rel=1e-6), seed
        errors.append(float(net.smooth_mflops().detach()) / counted - 1)
        expected.backward()  # and it has a gradient for every architecture parameter
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    assert abs(sum(errors) / len(errors)) < 0.15, errors


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])
def test_small_maps_as_matrix_products_match_the_convs(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training on small CPU maps, the depthwise and pointwise convs run as matrix products: the
    same outputs and gradients as the convs (float32 rounding), at every stride, dilation and
    size of the demo's and MNIST's last cells, odd sizes and 1x1 maps included."""
    import space.operations as operations

    torch.manual_seed(0)
    for c, size, stride in [(4, 8, 1), (4, 8, 2), (8, 4, 1), (16, 2, 1), (16, 7, 2), (6, 1, 1)]:
        op = OPS[name](c, stride, True).train()
        x = torch.randn(8, c, size, size, requires_grad=True)
        assert operations.small_maps(x)
        y = op(x)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x, *op.parameters()], g)
        with monkeypatch.context() as patch:
            patch.setattr(operations, "SMALL_MAP_PIXELS", 0)  # the convs
            assert not operations.small_maps(x)
            y_conv = op(x)
            grads_conv = torch.autograd.grad(y_conv, [x, *op.parameters()], g)
        torch.testing.assert_close(y, y_conv, rtol=1e-4, atol=1e-4)
        for a, b in zip(grads, grads_conv, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        # a wrong tap pattern is caught: the transposed kernel gives another result
        dw = (op[1].weight if name.startswith("dil") else op[0][1].weight).detach()
        if dw.shape[-1] == 3 and size > 1:
            eye = torch.eye(c).view(c, c, 1, 1)
            right = torch.nn.functional.conv2d(x.detach(), dw, None, 1, 1, 1, c)
            same = operations.depthwise_pointwise(x.detach(), dw, eye, 1, 1, 1)
            wrong = operations.depthwise_pointwise(x.detach(), dw.transpose(2, 3), eye, 1, 1, 1)
            torch.testing.assert_close(same, right, rtol=1e-4, atol=1e-4)
            assert not torch.allclose(wrong, right, atol=1e-3)
    # larger maps, evaluation and TorchScript keep the convs
    assert not operations.small_maps(torch.zeros(2, 4, 14, 14))
    assert not operations.small_maps(torch.zeros(2, 32, 8, 8))
    op = OPS[name](4, 1, True).eval()
    x = torch.randn(2, 4, 8, 8)
    scripted = torch.jit.script(op)
    torch.testing.assert_close(scripted(x), op(x))


def test_dense_and_grouped_convs_as_matrix_products_match_the_convs() -> None:
    """The fused supernet's paths on tiny maps: a dense conv (its product kernels) as one matrix
    product, and a depthwise conv followed by a grouped pointwise one (one group per edge)."""
    import space.operations as operations

    torch.manual_seed(0)
    f = torch.nn.functional
    for c, out, size, stride, kernel, dilation in [
        (4, 16, 4, 1, 3, 1),
        (8, 32, 4, 2, 5, 1),
        (16, 48, 2, 1, 3, 2),
        (6, 12, 3, 2, 5, 2),
    ]:
        pad = dilation * (kernel - 1) // 2
        x = torch.randn(4, c, size, size, requires_grad=True)
        weight = torch.randn(out, c, kernel, kernel, requires_grad=True)
        assert operations.dense_as_product(x, out, stride)
        y = operations.conv_as_product(x, weight, stride, pad, dilation)
        y_conv = f.conv2d(x, weight, None, stride, pad, dilation)
        torch.testing.assert_close(y, y_conv, rtol=1e-4, atol=1e-4)
        g = torch.randn_like(y)
        for a, b in zip(
            torch.autograd.grad(y, [x, weight], g),
            torch.autograd.grad(y_conv, [x, weight], g),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        m = out // c  # grouped: m groups of c channels, as a separable conv's second stage
        xm = torch.randn(4, m * c, size, size)
        dw = torch.randn(m * c, 1, kernel, kernel)
        pw = torch.randn(m * c, c, 1, 1)
        z = operations.depthwise_pointwise(xm, dw, pw, stride, pad, dilation, groups=m)
        z_conv = f.conv2d(f.conv2d(xm, dw, None, stride, pad, dilation, m * c), pw, groups=m)
        torch.testing.assert_close(z, z_conv, rtol=1e-4, atol=1e-4)
    assert not operations.dense_as_product(torch.zeros(2, 4, 8, 8), 16, 1)
