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
    dimension, each in ``[floor_i, high]``) maps to channel counts with :meth:`channels`: the nearest
    integer to ``α_i · full_i`` (at least 1), or, with a ``divisor``, the nearest multiple of it
    (torchvision's rule), never above ``full_i``; width 1.0 is always the full count.
    ``low`` is the space's lowest width; ``lows`` optionally raises it per dimension (a group that
    loses accuracy fast when thinned, say), each in ``[low, high]``. ``steps`` optionally makes a
    dimension's channel counts multiples of ``steps[i]`` (which divides ``full_i``): a grouped conv's
    channels per group, so that it slims in whole groups. The count is then the nearest multiple of the
    step (at least one step), or with a ``divisor`` of both.
    """

    names: tuple[str, ...]
    full: tuple[int, ...]
    low: float
    high: float = 1.0
    divisor: int | None = None
    lows: tuple[float, ...] | None = None
    steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.full):
            raise ValueError("width space: names and full channel counts differ in length")
        if not 0.0 < self.low <= self.high <= 1.0:
            raise ValueError(f"width space: need 0 < low <= high <= 1, got low={self.low} high={self.high}")
        if self.divisor is not None and self.divisor < 1:
            raise ValueError(f"width space: divisor must be a positive integer, got {self.divisor}")
        if self.lows is not None:
            if len(self.lows) != len(self.names):
                raise ValueError(
                    f"width space: {len(self.lows)} per-dimension lows for {len(self.names)} dimensions"
                )
            for name, floor in zip(self.names, self.lows):
                if not self.low <= floor <= self.high:
                    raise ValueError(
                        f"width space: low {floor:g} of '{name}' is outside [{self.low:g}, {self.high:g}]"
                    )
        if self.steps is not None:
            if len(self.steps) != len(self.names):
                raise ValueError(
                    f"width space: {len(self.steps)} channel steps for {len(self.names)} dimensions"
                )
            for name, step, full in zip(self.names, self.steps, self.full):
                if step < 1 or full % step:
                    raise ValueError(
                        f"width space: channel step {step} of '{name}' does not divide its {full} channels"
                    )

    @property
    def floor(self) -> tuple[float, ...]:
        """The lowest width of each dimension (``lows``, or ``low`` everywhere)."""
        return self.lows if self.lows is not None else (self.low,) * len(self.names)

    def smallest(self) -> list[float]:
        """The cheapest config: every dimension at its lowest width."""
        return list(self.floor)

    @property
    def dims(self) -> int:
        """Number of independent width multipliers."""
        return len(self.names)

    def uniform(self, w: float) -> list[float]:
        """The config with every multiplier equal to ``w`` in ``[low, high]``, raised to each
        dimension's floor where ``lows`` sets one (ValueError outside the space)."""
        if not (self.low - _TOL <= float(w) <= self.high + _TOL) or math.isnan(float(w)):
            raise ValueError(f"uniform width {float(w):g} is outside the space [{self.low:g}, {self.high:g}]")
        return [max(float(w), f) for f in self.floor]

    def sample(self, generator: torch.Generator | None = None, n: int | None = None) -> Any:
        """Uniform random config(s) inside the box; a list of floats, or a list of ``n`` lists."""
        count = 1 if n is None else n
        u = torch.rand(count, self.dims, generator=generator, dtype=torch.float64)
        floor = torch.tensor(self.floor, dtype=torch.float64)
        rows = (floor + (self.high - floor) * u).tolist()
        return rows[0] if n is None else rows

    def validate(self, alpha: Sequence[float]) -> None:
        """Raise ``ValueError`` naming the first problem if ``alpha`` is not a config of this space."""
        if len(alpha) != self.dims:
            raise ValueError(
                f"config has {len(alpha)} width multipliers but this space has {self.dims} "
                f"({', '.join(self.names[:4])}{', ...' if self.dims > 4 else ''})"
            )
        for i, (given, floor) in enumerate(zip(alpha, self.floor)):
            a = float(given)
            if not (floor - _TOL <= a <= self.high + _TOL) or math.isnan(a):
                raise ValueError(
                    f"width {a:g} for '{self.names[i]}' is outside the space [{floor:g}, {self.high:g}]"
                )

    def channels(self, alpha: Sequence[float]) -> list[int]:
        """Integer channel count of each group for config ``alpha`` (not validated: call validate)."""
        steps = self.steps or (1,) * len(self.full)
        if self.divisor is None:
            return [
                max(s, min(c, s * math.floor(a * c / s + 0.5))) for a, c, s in zip(alpha, self.full, steps)
            ]
        d = self.divisor
        return [
            c if a >= 1.0 - _TOL else min(c, make_divisible(a * c, math.lcm(d, s)))
            for a, c, s in zip(alpha, self.full, steps)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, the form stored in weight files and manifests (``lows`` and ``steps`` only
        when set, so spaces without them keep the form older versions read)."""
        d: dict[str, Any] = {
            "names": list(self.names),
            "full": list(self.full),
            "low": self.low,
            "high": self.high,
            "divisor": self.divisor,
        }
        if self.lows is not None:
            d["lows"] = list(self.lows)
        if self.steps is not None:
            d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WidthSpace:
        """Inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(d["names"]),
            full=tuple(int(c) for c in d["full"]),
            low=float(d["low"]),
            high=float(d.get("high", 1.0)),
            divisor=d.get("divisor"),
            lows=tuple(float(v) for v in d["lows"]) if d.get("lows") is not None else None,
            steps=tuple(int(v) for v in d["steps"]) if d.get("steps") is not None else None,
        )
