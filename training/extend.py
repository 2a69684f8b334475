"""A trained front, measured on a test set and extended by configs training did not choose.

:func:`evaluate_points` scores every point of a top-1 front as the runtime serves it;
:func:`evaluate_front` scores every point with an ``evaluate(model)`` (a task's, or the user's own for
a front ranked by a metric of its own); :func:`calibrate_point` makes an off-front point of any config
exactly as training made its front points (BN statistics recalibrated on the same seeded training
batches, scored by the same ``evaluate``: front_builder's own functions), so that it can be added with
:func:`pareco_runtime.manifest.add_points`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pareco_runtime.manifest import Front, FrontPoint
from pareco_runtime.runtime import SlimmableRuntime

from .batch_loss import Batch, Forward, first_input
from .calibrate import Evaluation, Tally
from .config import TrainConfig
from .front_builder import (
    CalibrationBatches,
    Evaluate,
    candidate_point,
    check_front_figures,
    evaluate_chosen,
    measure_candidates,
)

ORIGIN = "calibrated"
_ID_PREFIX = "c"


def evaluate_points(rt: SlimmableRuntime, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, Evaluation]:
    """Top-1 and loss of every point of ``rt`` on ``batches``, each run as the runtime serves it (switched
    to: its channels and calibrated BN statistics, then ``rt(x)``), by point id.

    One pass over the images, every point scored on each batch (switching costs microseconds, decoding
    a streamed image much more). The point active before is active again after.
    """
    before = rt.active
    tallies = {p.id: Tally() for p in rt.points}
    try:
        for x, y in batches:
            for p in rt.points:
                rt.switch(p)
                tallies[p.id].add(rt(x), y)
    finally:
        rt.switch(before)
    return {pid: tally.result() for pid, tally in tallies.items()}


def evaluate_front(
    front: str | os.PathLike[str] | SlimmableRuntime, evaluate: Evaluate
) -> dict[str, dict[str, float]]:
    """Every point of a front (a manifest path, or a loaded runtime) scored by ``evaluate(model) ->
    {name: value}``, by point id: the model at the point's config with its calibrated BN statistics, in
    eval mode, as :func:`training.build_front` scored it. The model is left as it was."""
    rt = front if isinstance(front, SlimmableRuntime) else SlimmableRuntime.load(Path(front))
    results = {}
    with torch.no_grad():
        for p in rt.points:
            with rt.model.config(p.alpha, rt.bn_stats(p)):
                results[p.id] = {str(k): float(v) for k, v in evaluate(rt.model).items()}
    return results


def calibration_settings(front: Front) -> tuple[int, int]:
    """(batches, images per batch) of BN recalibration as the front's training did it (its recorded run
    settings), or ``pareco train``'s defaults where the manifest records none."""
    recorded: dict[str, Any] = front.training.extra.get("config") or {}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    batches, batch_size = (int(recorded.get(n, defaults[n])) for n in ("calib_batches", "calib_batch_size"))
    return batches, batch_size


def selection_fraction(front: Front) -> float:
    """The share of training images the front's points were chosen on (its ``dataset.splits.selection``), 0 for none."""
    selection = (front.dataset.splits or {}).get("selection")
    return float(selection.get("fraction", 0.0)) if selection else 0.0


def new_point_id(front: Front) -> str:
    """The first of ``c00``, ``c01``, ... that no point of ``front`` uses."""
    taken = {p.id for p in front.points}
    return next(pid for i in range(len(taken) + 1) if (pid := f"{_ID_PREFIX}{i:02d}") not in taken)


def same_network(front: Front, channels: Sequence[int]) -> FrontPoint | None:
    """The point of ``front`` with these channel counts (the same sub-network), if there is one."""
    return next((p for p in front.points if p.channels == list(channels)), None)


def calibrate_point(
    front: str | os.PathLike[str] | SlimmableRuntime,
    alpha: Sequence[float],
    point_id: str,
    calib_batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    evaluate: Evaluate,
    *,
    selection_evaluate: Evaluate | None = None,
    forward: Forward = first_input,
) -> tuple[FrontPoint, dict[str, tuple[Tensor, Tensor]]]:
    """The off-front point ``point_id`` at config ``alpha`` (rounded to 6 decimals, as front points are) of
    a front (a manifest path, or a loaded runtime), and its BN statistics by module name: made as
    :func:`training.build_front` made the front's points.

    Its BN statistics are recalibrated on ``calib_batches`` (each run as ``forward(model, batch)``; pass
    the batches the front was built with), its MFLOPs and parameters come from the cost model, and it is
    scored by ``evaluate(model) -> {name: value}``, with ``selection_evaluate`` also on the split the
    front's points were chosen on (so that budgets rank it with them). The figures are recorded as the
    front records its points': its declared metric's names in ``metrics`` (every one required), or
    ``top1`` and ``loss`` for a top-1 front. Add it with :func:`pareco_runtime.manifest.add_points`. The
    runtime's model is left as it was; do not serve it from other threads meanwhile.
    """
    rt = front if isinstance(front, SlimmableRuntime) else SlimmableRuntime.load(Path(front))
    config = [round(float(a), 6) for a in alpha]
    model, metric = rt.model, rt.front.metric
    model.space.validate(config)
    calib = CalibrationBatches(calib_batches)
    [cand] = measure_candidates(model, [config], calib, selection_evaluate or evaluate, forward)
    evaluate_chosen(model, [cand], evaluate if selection_evaluate is not None else None)
    check_front_figures(metric, [cand])
    point = candidate_point(point_id, cand, selection_evaluate is not None, metric)
    point.origin = ORIGIN
    return point, dict(zip(model.bn_names, cand.stats))
