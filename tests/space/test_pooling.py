"""The training poolings (``space.pooling``) against PyTorch's own ``max_pool2d``/``avg_pool2d``."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from space.operations import OPS
from space.pooling import (
    AvgPool3x3,
    MaxPool3x3,
    avg_pool3x3,
    channels_last_max,
    max_pool3x3,
    separable_avg,
)

# (batch, channels, height, width): MNIST's and the default search's maps, odd and tiny ones
SHAPES = [(4, 4, 28, 28), (3, 16, 7, 7), (2, 8, 9, 6), (2, 16, 32, 32), (3, 2, 5, 7), (2, 3, 1, 1)]


def _with_ties(shape: tuple[int, ...]) -> torch.Tensor:
    """Random maps with constant patches and repeated rows: windows whose maximum is tied."""
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g)
    x[:, :, : shape[2] // 2, : shape[3] // 2] = 0.5
    x[:, :, -1] = x[:, :, 0]
    return x


def _grads(fn, x: torch.Tensor, g: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
    leaf = x.clone().requires_grad_()
    y = fn(leaf)
    if g is None:
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(g)
    return y.detach(), leaf.grad, g


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_max_pooling_gives_pytorchs_values_and_gradient_exactly(shape, stride) -> None:  # type: ignore[no-untyped-def]
    x = _with_ties(shape)
    y, grad, g = _grads(lambda t: F.max_pool2d(t, 3, stride, 1), x)
    y_fast, grad_fast, _ = _grads(lambda t: max_pool3x3(t, stride), x, g)
    assert y_fast.is_contiguous()
    assert torch.equal(y_fast, y)
    # the first maximum of a tied window gets the gradient, as in PyTorch's kernel
    assert torch.equal(grad_fast, grad)


def test_the_channels_last_path_is_taken_where_it_pays() -> None:
    assert channels_last_max(torch.zeros(2, 4, 28, 28), 1)
    assert channels_last_max(torch.zeros(2, 16, 8, 8), 2)
    assert not channels_last_max(torch.zeros(2, 16, 2, 2), 1)
    assert not channels_last_max(torch.zeros(2, 8, 8, 8), 2)
    assert not channels_last_max(torch.zeros(2, 4, 28, 28, dtype=torch.int64), 1)
    assert separable_avg(torch.zeros(2, 4, 7, 7), 1)
    assert not separable_avg(torch.zeros(2, 4, 6, 6), 1)
    assert not separable_avg(torch.zeros(2, 4, 28, 28), 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_average_pooling_matches_pytorchs_up_to_rounding(shape, stride) -> None:  # type: ignore[no-untyped-def]
    x = _with_ties(shape)
    y, grad, g = _grads(lambda t: F.avg_pool2d(t, 3, stride, 1, count_include_pad=False), x)
    y_fast, grad_fast, _ = _grads(lambda t: avg_pool3x3(t, stride), x, g)
    torch.testing.assert_close(y_fast, y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_fast, grad, atol=1e-6, rtol=1e-6)


def test_separable_average_pooling_counts_only_pixels_inside_the_map() -> None:
    """Corners average 4 pixels, edges 6, the inside 9 (``count_include_pad=False``)."""
    y = avg_pool3x3(torch.ones(1, 1, 7, 7), 1)
    assert torch.equal(y, torch.ones(1, 1, 7, 7))
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 0, 0] = 36.0
    y = avg_pool3x3(x, 1)
    assert y[0, 0, 0, 0] == 9.0 and y[0, 0, 0, 1] == 6.0 and y[0, 0, 1, 1] == 4.0


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_the_operations_train_on_the_fast_path_and_evaluate_and_export_as_pytorchs(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    op = OPS[name](4, 1, False)
    assert isinstance(op, MaxPool3x3 if name.startswith("max") else AvgPool3x3)
    calls: list[int] = []
    kind = type(op)
    original = kind._pool
    monkeypatch.setattr(kind, "_pool", lambda self, x: calls.append(1) or original(self, x))
    x = torch.randn(2, 4, 8, 8)
    expected = (
        F.max_pool2d(x, 3, 1, 1)
        if name.startswith("max")
        else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    )
    op.train()
    torch.testing.assert_close(op(x), expected, atol=1e-6, rtol=1e-6)
    assert calls == [1]
    op.eval()
    assert torch.equal(op(x), expected)
    traced = torch.jit.trace(op, x)
    scripted = torch.jit.script(op.train())
    assert calls == [1]  # neither tracing nor scripting took the fast path
    assert torch.equal(traced(x), expected)
    assert torch.equal(scripted(x), expected)
