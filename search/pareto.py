"""Pareto fronts of accuracy (higher is better) against a cost (lower is better)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def pareto_front(
    items: Sequence[T], *, accuracy: Callable[[T], float], cost: Callable[[T], float]
) -> list[T]:
    """The non-dominated items, by increasing cost: no other item is at least as accurate and at
    most as costly with one of the two strictly better. O(n log n)."""
    ordered = sorted(items, key=lambda it: (cost(it), -accuracy(it)))
    front: list[T] = []
    best = float("-inf")
    for item in ordered:
        if accuracy(item) > best:
            front.append(item)
            best = accuracy(item)
    return front


def dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Is (accuracy, cost) ``a`` dominated by ``b``?"""
    return b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1])
