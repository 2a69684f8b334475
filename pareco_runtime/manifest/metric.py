"""What a front is ranked by: its metric, the manifest's optional ``metric`` declaration.

A front without a declaration is a classification front ranked by top-1 (higher is better), its
figures in the points' ``top1`` / ``selection_top1`` / ``loss`` as ``pareco train`` writes them. A front
with one (``{"rank": "miou", "higher_is_better": true, "names": ["miou", "pixel_acc"]}``) is ranked by
its ``rank`` metric in its direction, every point's figures in ``metrics`` (the reported split) and
``selection_metrics`` (the split points were chosen on). :class:`Metric` is the one place that reads a
point's figure for ranking: budgets, the runtime, plots and the CLI ask it, never ``top1`` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .points import FrontPoint, Variant

TOP1 = "top1"


@dataclass(frozen=True)
class Metric:
    """A front's ranking metric: its name ``rank``, direction ``higher_is_better``, the ``names`` every
    point records, and whether the manifest ``declared`` it (False: the classic top-1 front)."""

    rank: str = TOP1
    higher_is_better: bool = True
    names: tuple[str, ...] = (TOP1,)
    declared: bool = False

    @classmethod
    def declare(cls, rank: str, higher_is_better: bool, names: Sequence[str]) -> Metric:
        """A declared metric; ValueError unless ``rank`` is among ``names`` and ``higher_is_better`` a bool."""
        if not isinstance(higher_is_better, bool):
            raise ValueError(f"higher_is_better must be True or False, got {higher_is_better!r}")
        if rank not in names:
            raise ValueError(
                f"metric {rank!r} is not among the figures evaluate returns ({', '.join(names) or 'none'}); "
                "rank by one of them"
            )
        return cls(rank, higher_is_better, tuple(names), declared=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Metric:
        """The manifest's ``metric`` object, or the classic top-1 metric for None (no declaration)."""
        if d is None:
            return cls()
        return cls(str(d["rank"]), bool(d["higher_is_better"]), tuple(d["names"]), declared=True)

    def to_dict(self) -> dict[str, Any] | None:
        """The manifest's ``metric`` object; None for an undeclared metric (the field is left out)."""
        if not self.declared:
            return None
        return {"rank": self.rank, "higher_is_better": self.higher_is_better, "names": list(self.names)}

    @property
    def label(self) -> str:
        """How tables and plots name it: ``top-1 %`` for the classic metric, else its name."""
        return "top-1 %" if not self.declared else self.rank

    def score(self, point: FrontPoint) -> float | None:
        """``point``'s figure of the ranking metric on the reported split (None: not measured)."""
        return point.metrics.get(self.rank) if self.declared else point.top1

    def selection_score(self, point: FrontPoint) -> float | None:
        """``point``'s figure of the ranking metric on the split it was chosen on (None: not recorded)."""
        return point.selection_metrics.get(self.rank) if self.declared else point.selection_top1

    def variant_scores(self, variant: Variant) -> tuple[float | None, float | None]:
        """(the quantized program's, the float point's) figure of the ranking metric of ``variant``."""
        if self.declared:
            return variant.metrics.get(self.rank), variant.fp32_metrics.get(self.rank)
        return variant.top1, variant.fp32_top1

    def worse_by(self, reference: float, measured: float) -> float:
        """How much worse ``measured`` is than ``reference`` in this metric's direction (negative: better):
        a drop of a higher-is-better figure, a rise of a loss."""
        return self.better_first(measured) - self.better_first(reference)

    def better_first(self, value: float) -> float:
        """``value`` as a quantity to minimise: negated when higher is better."""
        return -value if self.higher_is_better else value

    def ranking(self, points: Sequence[FrontPoint]) -> Callable[[FrontPoint], float]:
        """A key ranking ``points`` best first (to minimise): the figure they were chosen on where some
        point has one, else the reported figure; for the classic metric, else the loss; else more MFLOPs
        first. Points lacking the figure rank last."""
        getters: list[tuple[Callable[[FrontPoint], float | None], float]] = [
            (self.selection_score, 1.0),
            (self.score, 1.0),
        ]
        if not self.declared:
            getters.append((lambda p: p.loss, -1.0))  # the classic metric: top-1, higher is better
        for get, flip in getters:
            if any(get(p) is not None for p in points):

                def key(
                    p: FrontPoint, get: Callable[[FrontPoint], float | None] = get, f: float = flip
                ) -> float:
                    value = get(p)
                    return f * self.better_first(value) if value is not None else math.inf

                return key
        return lambda p: -p.mflops
