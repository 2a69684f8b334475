"""Width spaces: the vector of per-group width multipliers a slimmable network exposes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Width multipliers are compared with this slack so that values printed with a few decimals
# (0.316, 0.42) and read back still count as inside the space.
_TOL = 1e-6


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` not lower than 90 % of it.

    This is the rule torchvision's MobileNets use, so that full-width models match theirs.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * value:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class WidthSpace:
    """A box of width multipliers, one per independent channel group.

    ``full[i]`` is the channel count of group ``i`` at width 1.0. A config α (one float per
    dimension, each in ``[low, high]``) maps to channel counts with :meth:`channels`: the nearest
    integer to ``α_i · full_i`` (at least 1), or, with a ``divisor``, the nearest multiple of it
    (torchvision's rule), never above ``full_i``; width 1.0 is always the full count.
    """

    names: tuple[str, ...]
    full: tuple[int, ...]
    low: float
    high: float = 1.0
    divisor: int | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.full):
            raise ValueError("width space: names and full channel counts differ in length")
        if not 0.0 < self.low <= self.high <= 1.0:
            raise ValueError(f"width space: need 0 < low <= high <= 1, got low={self.low} high={self.high}")
        if self.divisor is not None and self.divisor < 1:
            raise ValueError(f"width space: divisor must be a positive integer, got {self.divisor}")

    @property
    def dims(self) -> int:
        """Number of independent width multipliers."""
        return len(self.names)

    def uniform(self, w: float) -> list[float]:
        """The config with every multiplier equal to ``w`` (validated against the space)."""
        alpha = [float(w)] * self.dims
        self.validate(alpha)
        return alpha

    def sample(self, generator: torch.Generator | None = None, n: int | None = None) -> Any:
        """Uniform random config(s) inside the box; a list of floats, or a list of ``n`` lists."""
        count = 1 if n is None else n
        u = torch.rand(count, self.dims, generator=generator, dtype=torch.float64)
        rows = (self.low + (self.high - self.low) * u).tolist()
        return rows[0] if n is None else rows

    def validate(self, alpha: Sequence[float]) -> None:
        """Raise ``ValueError`` naming the first problem if ``alpha`` is not a config of this space."""
        if len(alpha) != self.dims:
            raise ValueError(
                f"config has {len(alpha)} width multipliers but this space has {self.dims} "
                f"({', '.join(self.names[:4])}{', ...' if self.dims > 4 else ''})"
            )
        for i, given in enumerate(alpha):
            a = float(given)
            if not (self.low - _TOL <= a <= self.high + _TOL) or math.isnan(a):
                raise ValueError(
                    f"width {a:g} for '{self.names[i]}' is outside the space [{self.low:g}, {self.high:g}]"
                )

    def channels(self, alpha: Sequence[float]) -> list[int]:
        """Integer channel count of each group for config ``alpha`` (not validated: call validate)."""
        if self.divisor is None:
            return [max(1, min(c, math.floor(a * c + 0.5))) for a, c in zip(alpha, self.full)]
        d = self.divisor
        return [c if a >= 1.0 - _TOL else min(c, make_divisible(a * c, d)) for a, c in zip(alpha, self.full)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, the form stored in weight files and manifests."""
        return {
            "names": list(self.names),
            "full": list(self.full),
            "low": self.low,
            "high": self.high,
            "divisor": self.divisor,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WidthSpace:
        """Inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(d["names"]),
            full=tuple(int(c) for c in d["full"]),
            low=float(d["low"]),
            high=float(d.get("high", 1.0)),
            divisor=d.get("divisor"),
        )
