"""The cost objective of a width search: MACs, or a device's latency from its look-up table.

A search (PareCO's and TwoStage's BO, ``pareco specialize``) needs of its cost two things: the
exact cost of a config as a fraction of the full network's (what H stores, what the bisection
checks, what candidates are spread over) and a differentiable surrogate of it that the acquisition
optimiser can evaluate on a continuous α. :class:`MacCost` is the model's MAC count (a polynomial
of α); :class:`LatencyCost` is a latency table's prediction (multilinear in the channel counts, so
its surrogate is the same interpolation evaluated in torch on unrounded channels). Both are torch
only, so choosing a cost imports no optimiser.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pareco_runtime.latency_table import LatencyLUT, LatencyTableError
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.space import WidthSpace


class SearchCost(ABC):
    """A config's cost over the full network's: exact (:meth:`fraction`) and differentiable (call)."""

    def __init__(self, space: WidthSpace) -> None:
        self.space = space

    @property
    @abstractmethod
    def name(self) -> str:
        """What the cost measures, for messages and records (``"MACs"``, ``"latency@pixel7"``)."""

    @abstractmethod
    def fraction(self, alpha: Sequence[float]) -> float:
        """The exact cost of config ``alpha`` (channels rounded as the network rounds them) over the
        full network's."""

    @abstractmethod
    def __call__(self, alpha: Tensor) -> Tensor:
        """A differentiable surrogate of :meth:`fraction` for each config in ``alpha`` (``... x d``),
        equal to it wherever ``α_i · full_i`` are integers."""

    def uniform_width(self, target: float, tol: float = 1e-4) -> float:
        """The uniform width whose cost fraction is closest to ``target`` (bisection: a uniformly wider
        network costs more, also in latency up to the table's noise)."""
        s = self.space
        lo, hi = s.low, s.high
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.fraction(s.uniform(mid)) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < tol:
                break
        return min((lo, hi), key=lambda w: abs(self.fraction(s.uniform(w)) - target))

    def widths_spread(self, n: int) -> list[float]:
        """``n`` uniform widths whose costs are evenly spaced from the smallest to the largest model
        (fewer where two targets round to one width), the lowest and the highest always included."""
        s = self.space
        if n == 1:
            return [s.high]
        lo, hi = self.fraction(s.smallest()), self.fraction(s.uniform(s.high))
        widths = [self.uniform_width(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
        widths[0], widths[-1] = s.low, s.high
        return sorted(set(widths))


@dataclass
class CostPolynomial:
    """The MAC count of a :class:`SlimmableNet` as a differentiable polynomial of α, over the full MACs.

    Channels are taken as ``α_i · full_i`` without rounding (so the value equals ``model.macs`` exactly
    wherever those products are integers, and is within rounding elsewhere): MACs are a sum of
    products of two channel counts, i.e. ``αᵀQα + bᵀα + c``.
    """

    quad: Tensor
    lin: Tensor
    const: float
    full_macs: float

    @classmethod
    def from_model(cls, model: SlimmableNet) -> CostPolynomial:
        """Read the model's analytic cost terms (coefficient × slot × slot) into Q, b, c."""
        d = model.space.dims
        full = [float(f) for f in model.space.full]
        slots = [float(v) for v in model.ctx.ch]  # constant slots (input channels, classes, the 1) are fixed
        quad = torch.zeros(d, d, dtype=torch.float64)
        lin = torch.zeros(d, dtype=torch.float64)
        const = 0.0
        for coef, a, b in model.macs_terms:  # slots < d are widths
            if a < d and b < d:
                quad[a, b] += coef * full[a] * full[b]
            elif a < d:
                lin[a] += coef * full[a] * slots[b]
            elif b < d:
                lin[b] += coef * full[b] * slots[a]
            else:
                const += coef * slots[a] * slots[b]
        return cls(quad, lin, const, float(model.macs(model.space.uniform(1.0))))

    def __call__(self, alpha: Tensor) -> Tensor:
        """Cost fraction of each config in ``alpha`` (``... x d``), differentiable."""
        quad = self.quad.to(alpha)
        macs = torch.einsum("...i,ij,...j->...", alpha, quad, alpha) + alpha @ self.lin.to(alpha) + self.const
        return macs / self.full_macs


class MacCost(SearchCost):
    """Multiply-accumulates: ``model.macs(α)`` over the full model's, the paper's cost."""

    def __init__(self, model: SlimmableNet) -> None:
        super().__init__(model.space)
        self.model = model
        self.polynomial = CostPolynomial.from_model(model)

    @property
    def name(self) -> str:
        return "MACs"

    def fraction(self, alpha: Sequence[float]) -> float:
        return self.model.macs(alpha) / self.polynomial.full_macs

    def __call__(self, alpha: Tensor) -> Tensor:
        return self.polynomial(alpha)


class LatencyCost(SearchCost):
    """A device's latency as its look-up table predicts it, over the full network's predicted latency.

    The surrogate evaluates the table's calibrated sum of multilinear interpolations in torch at the
    unrounded channels ``α_i · full_i``, so it equals :meth:`LatencyLUT.predict_ms` at integer
    channel counts and has a gradient everywhere (piecewise linear in each channel count).
    """

    def __init__(
        self,
        lut: LatencyLUT,
        model: SlimmableNet,
        path: str | Path = "latency table",
        todo: str = "build one for this model with `pareco bench lut MANIFEST --profile NAME`",
    ) -> None:
        """``path`` names the table in errors, which end in ``todo``. LatencyTableError if the table was
        built for another network (architecture, its arguments, input size or width space)."""
        super().__init__(model.space)
        problem = lut.mismatch(model.arch, model.arch_kwargs, model.input_size, model.space.to_dict())
        if problem:
            raise LatencyTableError(f"{path}: built for another network ({problem}); {todo}")
        self.lut = lut
        self._full = torch.tensor(model.space.full, dtype=torch.float64)
        self._units = [
            (
                list(u.dims),
                [torch.tensor(lv, dtype=torch.float64) for lv in u.levels],
                torch.tensor(u.times_ms, dtype=torch.float64),
                [math.prod(len(lv) for lv in u.levels[k + 1 :]) for k in range(len(u.levels))],
            )
            for u in lut.units
        ]
        self.full_ms = lut.predict_ms(model.space.channels(model.space.uniform(model.space.high)))
        if not self.full_ms > 0:
            raise LatencyTableError(
                f"{path}: predicts {self.full_ms:g} ms for the full network; rebuild it with "
                "`pareco bench lut MANIFEST`"
            )

    @property
    def name(self) -> str:
        return f"latency@{self.lut.profile}"

    def fraction(self, alpha: Sequence[float]) -> float:
        return self.lut.predict_ms(self.space.channels(alpha)) / self.full_ms

    def __call__(self, alpha: Tensor) -> Tensor:
        channels = alpha * self._full.to(alpha)
        raw = torch.zeros(channels.shape[:-1], dtype=alpha.dtype, device=alpha.device)
        for dims, levels, times, strides in self._units:
            axes = [_brackets(channels[..., d], lv.to(alpha)) for d, lv in zip(dims, levels)]
            for corner in itertools.product(*axes):
                weight = math.prod((w for _, w in corner), start=torch.ones_like(raw))
                index = sum(
                    (i * s for (i, _), s in zip(corner, strides)),
                    start=torch.zeros_like(raw, dtype=torch.long),
                )
                raw = raw + weight * times.to(alpha)[index]
        return (self.lut.offset_ms + self.lut.scale * raw) / self.full_ms


def _brackets(c: Tensor, levels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The grid indices around each channel count and their interpolation weights (linear
    extrapolation beyond the grid's ends, as :meth:`UnitTable.raw_ms`)."""
    if levels.numel() == 1:
        zero = torch.zeros_like(c, dtype=torch.long)
        return [(zero, torch.ones_like(c))]
    j = (torch.searchsorted(levels, c.detach().contiguous(), right=True) - 1).clamp(0, levels.numel() - 2)
    t = (c - levels[j]) / (levels[j + 1] - levels[j])
    return [(j, 1.0 - t), (j + 1, t)]


def search_cost(
    model: SlimmableNet, lut_file: str | Path | None = None, todo: str | None = None
) -> SearchCost:
    """The cost a search uses: MACs, or the latency that the table in ``lut_file`` predicts; a refused
    table's message ends in ``todo`` (default: rebuild it from a manifest)."""
    if lut_file is None:
        return MacCost(model)
    if todo is None:
        return LatencyCost(LatencyLUT.load(lut_file), model, lut_file)
    return LatencyCost(LatencyLUT.load(lut_file, todo), model, lut_file, todo)
