"""A front re-chosen for one device: the width space searched again with the trained shared weights,
latency from that device's look-up table as the cost.

The shared weights serve every config of the width space, so a device whose kernels prefer other
channel counts than MACs suggest gets its own front without retraining. The search is TwoStage's:
the same BO (:func:`training.gp_search.propose`, Pareto-aware λ) over H, with a config's loss measured
after BN recalibration on the front's seeded calibration batches, on images held out of training,
and its cost the latency that :class:`~training.search_cost.LatencyCost` predicts. H starts with
uniform widths spread over latency, the front's own points (so the MAC-chosen front is in the
pool the new one is chosen from) and random configs; the chosen points are the non-dominated ones
by the front's metric on the held-out images (top-1, or a task's mIoU or mAP) and predicted latency,
thinned to the number asked for, then evaluated once on the validation/test split, as training's
front builder does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pareco_runtime.manifest import FrontPoint, Metric
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.pareto import non_dominated

from . import mobo
from .batch_loss import Batch, Forward, first_input
from .config import TrainingError
from .front_builder import (
    CalibrationBatches,
    Candidate,
    Evaluate,
    candidate_point,
    check_front_figures,
    evaluate_chosen,
    measure_candidates,
)
from .search_cost import LatencyCost

# The BO's settings as PareCO trains with them (config.py): configs per BO iteration, the bisection's
# tolerance on the cost fraction.
SAMPLES_PER_ITERATION = 2
EPSILON = 0.02
# Uniform widths spread over the cost in H before BO starts (PareCO's warm-up uses as many).
SPREAD_WIDTHS = 6
# Ids of a specialized front's points: s00, s01, ... (trained fronts use p.., calibrated points c..).
ID_PREFIX = "s"


@dataclass
class SpecializeSettings:
    """How much a search does: ``evals`` configs calibrated and measured in all (the first
    ``random_configs`` of them random after the spread widths and the front's points), ``points``
    kept; ``seed`` seeds the random configs and the BO."""

    points: int = 8
    evals: int = 40
    random_configs: int = 4
    seed: int = 0
    bo: mobo.SearchSettings = field(default_factory=mobo.SearchSettings)


@dataclass
class SpecializeResult:
    """The chosen points (ids s00.., cheapest first, with ``latency_predicted_ms`` for the profile)
    and their BN statistics by point id and module; H as visited (configs, held-out loss, cost
    fraction), and seconds spent measuring configs and in BO."""

    points: list[FrontPoint]
    bn_stats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    history: list[dict[str, Any]]
    measure_s: float
    bo_s: float


def specialize(
    model: SlimmableNet,
    front_configs: Sequence[Sequence[float]],
    cost: LatencyCost,
    calib_batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    evaluate: Evaluate,
    settings: SpecializeSettings,
    *,
    selection_evaluate: Evaluate | None = None,
    metric: Metric | None = None,
    forward: Forward = first_input,
    on_progress: Callable[[int, int], None] | None = None,
) -> SpecializeResult:
    """Search ``model``'s width space for the front of (``metric`` on held-out images, ``cost``'s latency).

    ``front_configs``: the trained front's configs, measured first. Each config's BN statistics are
    recalibrated on ``calib_batches`` (run as ``forward(model, batch)``, as
    :func:`training.build_front` takes them) and it is scored by ``selection_evaluate`` (images held out
    of training; ``evaluate`` where None), the chosen points then once by ``evaluate``. ``metric``: the
    front's (default top-1), the figure points are chosen by; the BO models the held-out ``loss`` where
    the figures have one, else the metric. ``on_progress(done, total)`` after each measured config. The
    model's weights are not changed.
    """
    if settings.points < 2 or settings.evals < 1:
        raise TrainingError(
            f"need at least 2 points and 1 evaluation, got points={settings.points}, evals={settings.evals}"
        )
    rank = metric or Metric()
    calib = CalibrationBatches(calib_batches)
    space = model.space
    generator = torch.Generator().manual_seed(settings.seed)
    start = [space.uniform(w) for w in cost.widths_spread(SPREAD_WIDTHS)] + [list(a) for a in front_configs]
    start += space.sample(generator, settings.random_configs)
    history: list[Candidate] = []
    fractions: list[float] = []
    seen: set[tuple[int, ...]] = set()
    total = max(settings.evals, len(start))
    timing = {"measure": 0.0, "bo": 0.0}

    def measure(configs: Sequence[Sequence[float]]) -> None:
        fresh = [list(a) for a in configs if tuple(space.channels(a)) not in seen]
        t0 = time.perf_counter()
        for cand in measure_candidates(model, fresh, calib, selection_evaluate or evaluate, forward):
            seen.add(tuple(cand.channels))
            history.append(cand)
            fractions.append(cost.fraction(cand.alpha))
            if on_progress:
                on_progress(len(history), total)
        timing["measure"] += time.perf_counter() - t0

    measure(start)
    bounds = torch.tensor([space.smallest(), [space.high] * space.dims], dtype=torch.float64)
    stalled = 0
    from .gp_search import propose  # BoTorch: loaded for the search, not with this module

    while len(history) < total and stalled < 3:  # BO may keep proposing visited sub-networks
        t0 = time.perf_counter()
        proposals, _ = propose(
            torch.tensor([c.alpha for c in history], dtype=torch.float64),
            torch.tensor([_objective(c, rank) for c in history], dtype=torch.float64),
            torch.tensor(fractions, dtype=torch.float64),
            min(SAMPLES_PER_ITERATION, total - len(history)),
            bounds=bounds,
            cost_of=cost.fraction,
            exact_cost=cost,
            lambda_sampling="pas",
            epsilon=EPSILON,
            generator=generator,
            settings=settings.bo,
        )
        timing["bo"] += time.perf_counter() - t0
        before = len(history)
        measure([p.alpha for p in proposals])
        stalled = stalled + 1 if len(history) == before else 0
    chosen = _choose(history, fractions, settings.points, rank)
    evaluate_chosen(model, chosen, evaluate if selection_evaluate is not None else None)
    check_front_figures(rank, chosen)
    points, stats = [], {}
    for i, c in enumerate(sorted(chosen, key=lambda c: (cost.fraction(c.alpha), c.macs))):
        p = candidate_point(f"{ID_PREFIX}{i:02d}", c, selection_evaluate is not None, rank)
        p.latency_predicted_ms = {cost.lut.profile: round(cost.fraction(c.alpha) * cost.full_ms, 6)}
        points.append(p)
        stats[p.id] = dict(zip(model.bn_names, c.stats))
    visited = [
        {"alpha": [round(a, 6) for a in c.alpha], **c.selection, "cost": f}
        for c, f in zip(history, fractions)
    ]
    return SpecializeResult(points, stats, visited, timing["measure"], timing["bo"])


def _objective(c: Candidate, metric: Metric) -> float:
    """What the BO models of a measured config: its held-out loss where it has one (as PareCO trains on
    it), else its metric as a quantity to minimise."""
    return c.selection["loss"] if "loss" in c.selection else metric.better_first(c.selection[metric.rank])


def _choose(
    history: Sequence[Candidate], fractions: Sequence[float], n: int, metric: Metric
) -> list[Candidate]:
    """The non-dominated candidates by (held-out ``metric`` in its direction, cost), at most ``n`` spread
    over the cost, the cheapest and the best always among them."""
    worse = [metric.better_first(c.selection[metric.rank]) for c in history]
    front = non_dominated(list(range(len(history))), lambda i: (worse[i], fractions[i]))
    ends = [
        min(front, key=lambda i: (fractions[i], worse[i])),
        min(front, key=lambda i: (worse[i], fractions[i])),
    ]
    return [history[i] for i in mobo.thin_front(list(fractions), worse, ends, n)]
