"""After training: calibrate and evaluate candidates, keep the non-dominated ones, write the files.

:func:`build_front` is the one way a front is built, by ``pareco train`` and by a training loop of the
user's own: each candidate config's BN statistics are recalibrated on the same calibration batches,
the calibrated sub-network is scored by an ``evaluate(model) -> {name: value}`` callable, the points
non-dominated by (MACs or a latency cost, the ranking metric in its direction) are kept, and the
weight file and manifest are written with the metric declared (top-1 fronts declare none).

With a separate ``selection_evaluate`` (a split held out of the training images), candidates are
scored and the front chosen there; only the chosen points are then scored by ``evaluate``, once, so
the figure a manifest reports is not the one its points were picked by. ``pareco train`` passes
top-1 and cross-entropy on its image data (:func:`classification_evaluate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from pareco_runtime.inputs import dtype_name
from pareco_runtime.latency_table import LatencyLUT, lut_path
from pareco_runtime.manifest import (
    WEIGHTS_NAME,
    DatasetSpec,
    Front,
    FrontPoint,
    Metric,
    TrainingRecord,
    write_front,
)
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.pareto import non_dominated

from .batch_loss import Batch, Forward, first_input, map_tensors
from .calibrate import BNStats, calibrate_bn, score

Evaluate = Callable[[SlimmableNet], Mapping[str, float]]
"""Scores the calibrated sub-network it is given (at its config, in eval mode): figures by name."""


@dataclass
class Candidate:
    """A calibrated config: its figures on the split it was chosen on (``selection``) and on the split
    the front reports (``reported``; None until :func:`evaluate_chosen`)."""

    alpha: list[float]
    channels: list[int]
    macs: int
    params: int
    selection: dict[str, float]
    stats: BNStats
    reported: dict[str, float] | None = None


# Calibration batches are the same for every candidate, so they are made once: for in-memory data
# that is 1-9 % of the front's time (benchmarks/front_build_speed.py, digits: 0.57 s and 2.06 s of
# 47.4 s and 22.1 s per 10 candidates, two runs on a busy machine); for streamed data it is decoding
# 1024 images per candidate. Above this size they are made again per candidate instead.
CALIB_KEEP_BYTES = 1 << 30


def _bytes(batch: Batch) -> int:
    """The bytes of the tensors inside ``batch``."""
    sizes: list[int] = []

    def count(t: Tensor) -> Tensor:
        sizes.append(t.element_size() * t.nelement())
        return t

    map_tensors(count, batch)
    return sum(sizes)


class CalibrationBatches:
    """The calibration batches, in the user's own structure, the same every time they are iterated.

    ``source``: a re-iterable (a list, a DataLoader), a callable returning a fresh iterable, or a
    one-shot iterator (listed on first use). Batches are kept in memory once made unless they exceed
    :data:`CALIB_KEEP_BYTES`, then made again per candidate.
    """

    def __init__(self, source: Iterable[Batch] | Callable[[], Iterable[Batch]]) -> None:
        if isinstance(source, Iterator):
            kept = list(source)
            self._make: Callable[[], Iterable[Batch]] = lambda: kept
        elif callable(source):
            self._make = source
        else:
            self._make = lambda: source
        self._kept: list[Batch] | None = None
        self._too_big = False

    def batches(self) -> Iterator[Batch]:
        """The calibration batches, batch by batch, in the same order every time."""
        if self._kept is not None:
            return iter(self._kept)
        if self._too_big:
            return iter(self._make())
        kept, size = [], 0
        for batch in self._make():
            kept.append(batch)
            size += _bytes(batch)
            if size > CALIB_KEEP_BYTES:
                self._too_big = True
                return iter(self._make())
        self._kept = kept
        return iter(kept)


def _figures(result: Mapping[str, float], alpha: Sequence[float], what: str) -> dict[str, float]:
    """``result`` as plain floats; ValueError naming the config unless every figure is a finite number."""
    figures = {}
    for name, value in dict(result).items():
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(
                f"{what} returned {name}={number} for config {[round(a, 4) for a in alpha]}; "
                "return a finite number for every figure"
            )
        figures[str(name)] = number
    return figures


def _scored(
    model: SlimmableNet, alpha: Sequence[float], stats: BNStats, evaluate: Evaluate, what: str
) -> dict[str, float]:
    """``evaluate`` of config ``alpha`` with BN statistics ``stats``; the model is left as it was."""
    with model.config(alpha, stats):
        return _figures(evaluate(model), alpha, what)


def measure_candidates(
    model: SlimmableNet,
    configs: Sequence[Sequence[float]],
    calib: CalibrationBatches,
    evaluate: Evaluate,
    forward: Forward = first_input,
    on_done: Callable[[int, int], None] | None = None,
) -> list[Candidate]:
    """Calibrate BN for each distinct sub-network among ``configs`` on ``calib`` (each batch run through
    ``forward(model, batch)``) and score it with ``evaluate``.

    Configs that map to identical channel counts are the same sub-network and are measured once. The
    model is left exactly as it was.
    """
    seen: set[tuple[int, ...]] = set()
    unique = []
    for a in configs:
        key = tuple(model.channels(a))
        if key not in seen:
            seen.add(key)
            unique.append(list(a))
    out = []
    for i, alpha in enumerate(unique):
        stats = calibrate_bn(model, alpha, calib.batches(), forward)
        figures = _scored(model, alpha, stats, evaluate, "evaluate")
        out.append(
            Candidate(alpha, model.channels(alpha), model.macs(alpha), model.params(alpha), figures, stats)
        )
        if on_done:
            on_done(i + 1, len(unique))
    return out


def evaluate_chosen(model: SlimmableNet, chosen: Sequence[Candidate], evaluate: Evaluate | None) -> None:
    """Set ``reported`` of each chosen candidate: ``evaluate`` with its calibrated statistics, or a copy of
    its selection figures where ``evaluate`` is None (the front was chosen on the reported split)."""
    for c in chosen:
        c.reported = (
            dict(c.selection) if evaluate is None else _scored(model, c.alpha, c.stats, evaluate, "evaluate")
        )


def classification_calibration(data: Any, batch_size: int, num_batches: int, seed: int) -> CalibrationBatches:
    """``data``'s seeded calibration batches ``(images, labels)`` (``training.data.Data``)."""
    return CalibrationBatches(lambda: data.calib_batches(batch_size, num_batches, seed))


def classification_evaluate(batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> Evaluate:
    """An :data:`Evaluate` of top-1 in percent and mean cross-entropy on the images ``batches()`` yields."""

    def evaluate(model: SlimmableNet) -> dict[str, float]:
        ev = score(model, batches())
        return {"top1": ev.top1, "loss": ev.loss}

    return evaluate


def classification_evaluators(data: Any, eval_batch_size: int = 500) -> tuple[Evaluate, Evaluate | None]:
    """(evaluate, selection_evaluate) of top-1 and loss on ``data``'s validation and selection splits;
    selection_evaluate is None where the data has no selection split."""
    evaluate = classification_evaluate(lambda: data.val_batches(eval_batch_size))
    if not data.info.num_selection:
        return evaluate, None
    return evaluate, classification_evaluate(lambda: data.selection_batches(eval_batch_size))


def evaluate_candidates(
    model: SlimmableNet,
    configs: Sequence[Sequence[float]],
    data: Any,
    calib_batches: int,
    calib_batch_size: int,
    seed: int,
    eval_batch_size: int = 500,
    on_done: Callable[[int, int], None] | None = None,
) -> list[Candidate]:
    """:func:`measure_candidates` on ``data`` (``training.data.Data``): calibrated on its seeded training
    batches, top-1 and loss on its selection split (the validation split where it has none)."""
    calib = classification_calibration(data, calib_batch_size, calib_batches, seed)
    evaluate = classification_evaluate(lambda: data.selection_batches(eval_batch_size))
    return measure_candidates(model, configs, calib, evaluate, on_done=on_done)


def split_record(info: Any, select_fraction: float, seed: int) -> dict[str, Any]:
    """The manifest's ``dataset.splits``: the validation split the points report, and the selection
    split they were chosen on (absent where they were chosen on the validation split)."""
    splits: dict[str, Any] = {"top1": {"name": info.val_split, "images": info.num_val}}
    if info.num_selection:
        splits["selection"] = {
            "name": "train-holdout",
            "images": info.num_selection,
            "fraction": select_fraction,
            "seed": seed,
        }
    return splits


def pareto_candidates(
    cands: Sequence[Candidate], metric: Metric | None = None, cost: Callable[[Candidate], float] | None = None
) -> list[Candidate]:
    """The non-dominated candidates on (selection figure of ``metric`` in its direction, ``cost``;
    default MACs), cheapest first. ``metric`` defaults to top-1."""
    rank = metric or Metric()
    cost_of = cost or (lambda c: c.macs)

    def merit(c: Candidate) -> float:
        return rank.better_first(c.selection[rank.rank])

    front = non_dominated(list(cands), lambda c: (merit(c), cost_of(c)))
    return sorted(front, key=lambda c: (cost_of(c), c.macs, merit(c)))


def candidate_point(point_id: str, c: Candidate, selected: bool, metric: Metric | None = None) -> FrontPoint:
    """The front point of candidate ``c`` (scored by :func:`evaluate_chosen`): widths to 6 decimals, its
    cost, and its figures: for a top-1 front (``metric`` None or undeclared), reported top-1 (4
    decimals) and loss (6), with ``selected`` (chosen on a selection split) its selection top-1; for a
    declared metric, ``metrics`` and with ``selected`` ``selection_metrics``."""
    point = FrontPoint(
        id=point_id,
        alpha=[round(a, 6) for a in c.alpha],
        channels=c.channels,
        mflops=c.macs / 1e6,
        params=c.params,
    )
    reported = c.reported or {}
    if metric is not None and metric.declared:
        point.metrics = dict(reported)
        point.selection_metrics = dict(c.selection) if selected else {}
        return point
    point.top1 = round(reported["top1"], 4) if "top1" in reported else None
    point.loss = round(reported["loss"], 6) if "loss" in reported else None
    point.selection_top1 = round(c.selection["top1"], 4) if selected else None
    return point


@dataclass
class BuiltFront:
    """What :func:`build_front` wrote: the ``manifest`` and ``weights`` paths, the ``chosen`` candidates
    (cheapest first, the points ``p00``, ``p01``, ...) and how many candidates were ``evaluated``."""

    manifest: Path
    weights: Path
    chosen: list[Candidate]
    evaluated: int


def _check_figures(
    cands: Sequence[Candidate],
    names: Sequence[str],
    source: str = "for the first",
    fix: str = "return the same figures for every sub-network",
) -> None:
    """Every candidate's figures (selection and reported) are named ``names``, in that order; ValueError
    naming the first that differs, where ``names`` came from (``source``) and ``fix``."""
    for c in cands:
        for figures in (c.selection, c.reported):
            if figures is not None and list(figures) != list(names):
                raise ValueError(
                    f"evaluate returned {', '.join(figures)} for config {[round(a, 4) for a in c.alpha]} but "
                    f"{', '.join(names)} {source}; {fix}"
                )


def check_front_figures(metric: Metric, cands: Sequence[Candidate]) -> None:
    """Candidates scored for a front ranked by ``metric`` carry its figures: every declared name, in its
    order, or ``top1`` for a top-1 front; ValueError (one line) otherwise."""
    if metric.declared:
        _check_figures(cands, metric.names, "as the front declares", "return the front's figures")
        return
    for c in cands:
        for figures in (c.selection, c.reported):
            if figures is not None and "top1" not in figures:
                raise ValueError(
                    f"evaluate returned {', '.join(figures) or 'nothing'} for config "
                    f"{[round(a, 4) for a in c.alpha]}; a front ranked by top-1 needs top1 (and loss)"
                )


def _declared(metric: str | Metric, higher_is_better: bool, cands: Sequence[Candidate]) -> Metric:
    """The front's metric: ``metric`` as given, or declared by name with the figures every candidate has
    (ValueError where candidates differ in their figures, or the name is not among them)."""
    if isinstance(metric, Metric):
        return metric
    names = list(cands[0].selection)
    _check_figures(cands, names)
    return Metric.declare(metric, higher_is_better, names)


def _input_dataset(calib: CalibrationBatches, model: SlimmableNet) -> DatasetSpec:
    """A dataset record for a front built from the user's own data: the input of the first
    calibration batch (what ``first_input`` feeds the model: ``[N, C, H, W]`` images or ``[N, C, L]``
    sequences, float; or ``[N, T]`` integer token ids), no normalisation, no classes."""
    batch = next(iter(calib.batches()))
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    ids = isinstance(x, Tensor) and x.dim() == 2 and not x.is_floating_point()
    if not isinstance(x, Tensor) or not (ids or x.dim() in (3, 4)):
        raise ValueError(
            "build_front: cannot read the input size [C, H, W], [C, L] or [T] (token ids) from the "
            "calibration batches; pass dataset=DatasetSpec(...)"
        )
    size = tuple(int(n) for n in x.shape[1:])
    c = 1 if ids else size[0]
    return DatasetSpec(
        name="custom",
        input_size=size,
        mean=[0.0] * c,
        std=[1.0] * c,
        class_names=[],
        input_dtype=dtype_name(x.dtype, "build_front: the calibration batches' input"),
    )


def build_front(
    out_dir: str | Path,
    model: SlimmableNet,
    configs: Sequence[Sequence[float]],
    calib_batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    evaluate: Evaluate,
    *,
    metric: str | Metric,
    training: Mapping[str, Any],
    higher_is_better: bool = True,
    selection_evaluate: Evaluate | None = None,
    forward: Forward = first_input,
    dataset: DatasetSpec | None = None,
    cost: Callable[[Sequence[float]], float] | None = None,
    on_done: Callable[[int, int], None] | None = None,
    on_chosen: Callable[[int], None] | None = None,
    started: float | None = None,
) -> BuiltFront:
    """Build the front of a trained ``model`` from candidate ``configs`` (``trainer.candidates(probe)``) and
    write ``out_dir/model.safetensors`` and ``out_dir/model.front.json`` (each atomically).

    Each distinct sub-network's BN statistics are recalibrated on ``calib_batches`` (the user's own
    batches, each run as ``forward(model, batch)``, default ``model(batch[0])``: a re-iterable, a
    callable returning one, or an iterator, listed once) and the calibrated sub-network is scored by
    ``selection_evaluate`` where given, else by ``evaluate`` (``evaluate(model) -> {name: value}``, run
    at the config in eval mode; every config must return the same finite figures). The points
    non-dominated by (``cost`` of a config, default MACs; the figure named ``metric`` in its direction,
    ``higher_is_better``) are kept, cheapest first, and where ``selection_evaluate`` chose them, scored
    once by ``evaluate``. The manifest declares the metric (the names ``evaluate`` returns, ranked by
    ``metric``) and records each point's figures (``metrics``, and ``selection_metrics``); a
    :class:`~pareco_runtime.manifest.Metric` passed as ``metric`` is used as given (``pareco train``
    passes the undeclared top-1 metric, written as ``top1`` / ``loss`` / ``selection_top1``).

    ``training``: the manifest's training record (algorithm, epochs, seed, wall_time_s, history_size,
    extra), to whose ``extra`` the candidates evaluated and the seconds since ``started`` (a
    ``time.perf_counter()``; default: the call) are added; ``dataset``: the manifest's dataset record,
    by default the input size of the first calibration batch, no normalisation and no class names.
    ``on_done(k, n)`` after each candidate, ``on_chosen(n)`` once the front is chosen. The model is
    left exactly as it was.
    """
    t0 = time.perf_counter() if started is None else started
    calib = CalibrationBatches(calib_batches)
    cands = measure_candidates(model, configs, calib, selection_evaluate or evaluate, forward, on_done)
    if not cands:
        raise ValueError("build_front: no candidate configs; pass trainer.candidates(probe)")
    chosen_metric = _declared(metric, higher_is_better, cands)
    chosen = pareto_candidates(cands, chosen_metric, None if cost is None else lambda c: cost(c.alpha))
    if on_chosen:
        on_chosen(len(chosen))
    evaluate_chosen(model, chosen, evaluate if selection_evaluate is not None else None)
    if chosen_metric.declared:
        _check_figures(chosen, chosen_metric.names)
    record = {**training, "extra": {**training.get("extra", {}), "candidates_evaluated": len(cands)}}
    record["extra"]["finalize_time_s"] = round(time.perf_counter() - t0, 3)
    ids = [f"p{i:02d}" for i in range(len(chosen))]
    bn_stats = {pid: dict(zip(model.bn_names, c.stats)) for pid, c in zip(ids, chosen)}
    points = [
        candidate_point(pid, c, selection_evaluate is not None, chosen_metric) for pid, c in zip(ids, chosen)
    ]
    spec = dataset if dataset is not None else _input_dataset(calib, model)
    manifest = write_front(
        out_dir, model, points, bn_stats, spec, TrainingRecord.from_dict(record), chosen_metric
    )
    return BuiltFront(manifest, manifest.with_name(WEIGHTS_NAME), chosen, len(cands))


def classification_dataset(data_info: Any, splits: dict[str, Any]) -> DatasetSpec:
    """The manifest's dataset record of image data (``training.data.DataInfo``: name, input size,
    normalisation, class names, preprocessing) with its ``splits`` (:func:`split_record`)."""
    return DatasetSpec(
        name=data_info.name,
        input_size=tuple(data_info.input_size),
        mean=list(data_info.mean),
        std=list(data_info.std),
        class_names=list(data_info.class_names),
        preprocess=data_info.preprocess,
        splits=splits,
    )


def record_latency_table(manifest: Path, lut: LatencyLUT) -> Path:
    """Save ``lut`` (the table a run searched on) beside ``manifest`` and record its profile there with
    each point's predicted latency, so that budgets in that profile's milliseconds can use the
    predictions; the table's new path."""
    path = lut_path(manifest, lut.profile)
    lut.save(path)
    with Front.update(manifest) as front:
        front.record_profile(lut.device_profile(), {}, None, lut.predict_points(front.points))
    return path
