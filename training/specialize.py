"""A front re-chosen for one device: the width space searched again with the trained shared weights,
latency from that device's look-up table as the cost.

The shared weights serve every config of the width space, so a device whose kernels prefer other
channel counts than MACs suggest gets its own front without retraining. The search is TwoStage's:
the same BO (:func:`training.mobo.propose`, Pareto-aware λ) over H, with a config's loss measured
after BN recalibration on the front's seeded calibration batches, on images held out of training,
and its cost the latency that :class:`~training.search_cost.LatencyCost` predicts. H starts with
uniform widths spread over latency, the front's own points (so the MAC-chosen front is in the
pool the new one is chosen from) and random configs; the chosen points are the non-dominated ones
by held-out top-1 and predicted latency, thinned to the number asked for, then evaluated once on
the validation/test split, as training's front builder does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pareco_runtime.manifest import FrontPoint
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.pareto import non_dominated

from . import mobo
from .config import TrainingError
from .front_builder import (
    Candidate,
    candidate_point,
    classification_evaluators,
    evaluate_candidates,
    evaluate_chosen,
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
    data: Any,
    calib: tuple[int, int],
    settings: SpecializeSettings,
    on_progress: Callable[[int, int], None] | None = None,
) -> SpecializeResult:
    """Search ``model``'s width space for the front of (held-out top-1, ``cost``'s latency).

    ``front_configs``: the trained front's configs, measured first; ``data``: the front's data with a
    selection split (:func:`training.front_data.load_front_data`); ``calib``: (batches, images per
    batch) of BN recalibration. ``on_progress(done, total)`` after each measured config. The
    model's weights are not changed.
    """
    if settings.points < 2 or settings.evals < 1:
        raise TrainingError(
            f"need at least 2 points and 1 evaluation, got points={settings.points}, evals={settings.evals}"
        )
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
        for cand in evaluate_candidates(model, fresh, data, calib[0], calib[1], settings.seed):
            seen.add(tuple(cand.channels))
            history.append(cand)
            fractions.append(cost.fraction(cand.alpha))
            if on_progress:
                on_progress(len(history), total)
        timing["measure"] += time.perf_counter() - t0

    measure(start)
    bounds = torch.tensor([space.smallest(), [space.high] * space.dims], dtype=torch.float64)
    stalled = 0
    while len(history) < total and stalled < 3:  # BO may keep proposing visited sub-networks
        t0 = time.perf_counter()
        proposals, _ = mobo.propose(
            torch.tensor([c.alpha for c in history], dtype=torch.float64),
            torch.tensor([c.selection["loss"] for c in history], dtype=torch.float64),
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
    chosen = _choose(history, fractions, settings.points)
    evaluate, selection_evaluate = classification_evaluators(data)
    evaluate_chosen(model, chosen, evaluate if selection_evaluate is not None else None)
    selected = data.info.num_selection > 0
    points, stats = [], {}
    for i, c in enumerate(sorted(chosen, key=lambda c: (cost.fraction(c.alpha), c.macs))):
        p = candidate_point(f"{ID_PREFIX}{i:02d}", c, selected)
        p.latency_predicted_ms = {cost.lut.profile: round(cost.fraction(c.alpha) * cost.full_ms, 6)}
        points.append(p)
        stats[p.id] = dict(zip(model.bn_names, c.stats))
    visited = [
        {
            "alpha": [round(a, 6) for a in c.alpha],
            "loss": c.selection["loss"],
            "top1": c.selection["top1"],
            "cost": f,
        }
        for c, f in zip(history, fractions)
    ]
    return SpecializeResult(points, stats, visited, timing["measure"], timing["bo"])


def _choose(history: Sequence[Candidate], fractions: Sequence[float], n: int) -> list[Candidate]:
    """The non-dominated candidates by (held-out top-1, cost), at most ``n`` spread over the cost, the
    cheapest and the most accurate always among them."""
    error = [100.0 - c.selection["top1"] for c in history]
    front = non_dominated(list(range(len(history))), lambda i: (error[i], fractions[i]))
    ends = [
        min(front, key=lambda i: (fractions[i], error[i])),
        min(front, key=lambda i: (error[i], fractions[i])),
    ]
    return [history[i] for i in mobo.thin_front(list(fractions), error, ends, n)]
