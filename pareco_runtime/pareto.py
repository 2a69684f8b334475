"""Pareto fronts as sets of points: non-dominated sorting, and how far apart neighbouring points may be."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Neighbouring front points further apart than this in MACs leave the budgets between them served by
# the cheaper point only: a training run warns of such a gap, a plot breaks its line there. The digits
# front's cheapest step (1.01 -> 2.72 MFLOPs) is 2.7x, Independent's widths on ResNet20 (4.1 / 10.3 /
# 22.9 / 40.6 MFLOPs) are at most 2.5x apart; a front with its middle missing is more.
MAX_MAC_GAP = 3.0


def non_dominated(items: Sequence[Any], objectives: Callable[[Any], Sequence[float]]) -> list[Any]:
    """The items no other item dominates, all objectives minimised, in input order.

    An item dominates another when it is no worse in every objective and better in one; exact
    duplicates both stay. O(n^2), fine for fronts of a few thousand points.
    """
    values = [tuple(objectives(it)) for it in items]
    keep = []
    for i, vi in enumerate(values):
        dominated = any(
            all(a <= b for a, b in zip(vj, vi)) and any(a < b for a, b in zip(vj, vi))
            for j, vj in enumerate(values)
            if j != i
        )
        if not dominated:
            keep.append(items[i])
    return keep
