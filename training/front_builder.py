"""After training: calibrate and evaluate candidates, keep the non-dominated ones, write the files.

Candidates are evaluated on the selection split (held out of the training images) and the front is
chosen there; only the chosen points are then evaluated on the validation/test split, once, so the
top-1 a manifest reports is not the figure its points were picked by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pareco_runtime.latency_table import LatencyLUT, lut_path
from pareco_runtime.manifest import WEIGHTS_NAME, DatasetSpec, Front, FrontPoint, TrainingRecord, write_front
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.pareto import non_dominated

from .calibrate import BNStats, calibrate_bn, evaluate


@dataclass
class Candidate:
    """A calibrated config: ``top1`` / ``loss`` on the selection split, ``val_top1`` / ``val_loss`` on
    the validation split (None until :func:`evaluate_chosen`)."""

    alpha: list[float]
    channels: list[int]
    macs: int
    params: int
    top1: float
    loss: float
    stats: BNStats
    val_top1: float | None = None
    val_loss: float | None = None


# Calibration batches are the same for every candidate, so they are made once: for in-memory data
# that is 1-9 % of the front's time (benchmarks/front_build_speed.py, digits: 0.57 s and 2.06 s of
# 47.4 s and 22.1 s per 10 candidates, two runs on a busy machine); for streamed data it is decoding
# 1024 images per candidate. Above this size they are made again per candidate instead.
CALIB_KEEP_BYTES = 1 << 30


class _CalibrationImages:
    """The seeded calibration batches, kept in memory once made unless they exceed ``CALIB_KEEP_BYTES``."""

    def __init__(self, data: Any, batch_size: int, num_batches: int, seed: int) -> None:
        self._make = lambda: (x for x, _ in data.calib_batches(batch_size, num_batches, seed))
        self._kept: list[Any] | None = None
        self._too_big = False

    def batches(self) -> Iterator[Any]:
        """The calibration images, batch by batch, in the same order every time."""
        if self._kept is not None:
            return iter(self._kept)
        if self._too_big:
            return self._make()
        kept, size = [], 0
        for x in self._make():
            kept.append(x)
            size += x.element_size() * x.nelement()
            if size > CALIB_KEEP_BYTES:
                self._too_big = True
                return self._make()
        self._kept = kept
        return iter(kept)


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
    """Calibrate BN for each distinct sub-network among ``configs`` and evaluate it on the selection split.

    Configs that map to identical channel counts are the same sub-network and are evaluated once.
    Every candidate is calibrated on the same seeded training batches (no augmentation). The model is
    left exactly as it was.
    """
    seen: set[tuple[int, ...]] = set()
    unique = []
    for a in configs:
        key = tuple(model.channels(a))
        if key not in seen:
            seen.add(key)
            unique.append(list(a))
    calib = _CalibrationImages(data, calib_batch_size, calib_batches, seed)
    out = []
    for i, alpha in enumerate(unique):
        stats = calibrate_bn(model, alpha, calib.batches())
        ev = evaluate(model, alpha, stats, data.selection_batches(eval_batch_size))
        out.append(
            Candidate(
                alpha, model.channels(alpha), model.macs(alpha), model.params(alpha), ev.top1, ev.loss, stats
            )
        )
        if on_done:
            on_done(i + 1, len(unique))
    return out


def evaluate_chosen(
    model: SlimmableNet, chosen: Sequence[Candidate], data: Any, eval_batch_size: int = 500
) -> None:
    """Set ``val_top1`` / ``val_loss`` of each chosen candidate: evaluated on the validation split with its
    calibrated statistics, or copied where the data has no selection split (it was evaluated there)."""
    for c in chosen:
        if data.info.num_selection == 0:
            c.val_top1, c.val_loss = c.top1, c.loss
            continue
        ev = evaluate(model, c.alpha, c.stats, data.val_batches(eval_batch_size))
        c.val_top1, c.val_loss = ev.top1, ev.loss


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
    cands: Sequence[Candidate], cost: Callable[[Candidate], float] | None = None
) -> list[Candidate]:
    """The non-dominated candidates on (selection error, ``cost``; default MACs), cheapest first."""
    cost_of = cost or (lambda c: c.macs)
    front = non_dominated(list(cands), lambda c: (-c.top1, cost_of(c)))
    return sorted(front, key=lambda c: (cost_of(c), c.macs, -c.top1))


def candidate_point(point_id: str, c: Candidate, selected: bool) -> FrontPoint:
    """The front point of candidate ``c`` (evaluated by :func:`evaluate_chosen`): widths to 6 decimals,
    its cost, validation top-1 (4 decimals) and loss (6), and with ``selected`` (the front was chosen
    on a selection split) its selection top-1."""
    return FrontPoint(
        id=point_id,
        alpha=[round(a, 6) for a in c.alpha],
        channels=c.channels,
        mflops=c.macs / 1e6,
        params=c.params,
        top1=None if c.val_top1 is None else round(c.val_top1, 4),
        loss=None if c.val_loss is None else round(c.val_loss, 6),
        selection_top1=round(c.top1, 4) if selected else None,
    )


def write_outputs(
    out_dir: Path,
    model: SlimmableNet,
    front: Sequence[Candidate],
    data_info: Any,
    training: dict[str, Any],
    splits: dict[str, Any],
) -> tuple[Path, Path]:
    """Write the weight file and the front manifest into ``out_dir`` (both atomically).

    Points get ids ``p00``, ``p01``, ... in ``front``'s order (:func:`pareto_candidates`: cheapest
    first); their ``top1`` / ``loss`` are the
    validation figures (:func:`evaluate_chosen`), ``selection_top1`` the selection split's where there
    is one. ``data_info``: the data's name, input size, normalisation and class names
    (``training.data.DataInfo``); ``training``: the manifest's training record; ``splits``:
    :func:`split_record`. Returns (weights path, manifest path).
    """
    selected = "selection" in splits
    ids = [f"p{i:02d}" for i in range(len(front))]
    bn_stats = {pid: dict(zip(model.bn_names, c.stats)) for pid, c in zip(ids, front)}
    points = [candidate_point(pid, c, selected) for pid, c in zip(ids, front)]
    dataset = DatasetSpec(
        name=data_info.name,
        input_size=tuple(data_info.input_size),
        mean=list(data_info.mean),
        std=list(data_info.std),
        class_names=list(data_info.class_names),
        preprocess=data_info.preprocess,
        splits=splits,
    )
    manifest = write_front(out_dir, model, points, bn_stats, dataset, TrainingRecord.from_dict(training))
    return manifest.with_name(WEIGHTS_NAME), manifest


def record_latency_table(manifest: Path, lut: LatencyLUT) -> Path:
    """Save ``lut`` (the table a run searched on) beside ``manifest`` and record its profile there with
    each point's predicted latency, so that budgets in that profile's milliseconds can use the
    predictions; the table's new path."""
    path = lut_path(manifest, lut.profile)
    lut.save(path)
    with Front.update(manifest) as front:
        front.record_profile(lut.device_profile(), {}, None, lut.predict_points(front.points))
    return path
