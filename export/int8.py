"""int8 programs of front points with their accuracy measured: the program is loaded back in its own
runtime, its top-1 (or the front's own metric: a task's mIoU or mAP) measured on the evaluation images
beside the fp32 point's on the same images, and one that is worse by more than ``max_drop`` in that
metric's direction is reported and not written (unless forced),
before it is moved into place; what is written is recorded in ``export.json`` and, as a
:class:`~pareco_runtime.manifest.Variant`, in the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pareco_runtime.manifest import Front, Metric, Variant
from pareco_runtime.outputs import unflatten_outputs

from .exporter import ExportResult, export_points
from .formats import Calibration, ExportError, Runner, check_int8_formats, served_backend

if TYPE_CHECKING:
    from pareco_runtime import FrontPoint, SlimmableRuntime

# Calibration images come in batches of this many (``--calib-batches`` counts them).
CALIB_BATCH = 32
# Top-1 points (or units of a front's own metric) an int8 program may lose against its fp32 point
# before it is refused (``--max-drop``).
DEFAULT_MAX_DROP = 2.0

Score = Callable[[Callable[[torch.Tensor], Any]], Mapping[str, float]]
"""Measures a program, given as its forward, on the evaluation images: figures by name."""


class DropError(ExportError):
    """An int8 program lost more top-1 than allowed; nothing was written for it."""


def _chunks(x: torch.Tensor, runner: Runner) -> Iterator[tuple[torch.Tensor, int]]:
    """``x`` cut into batches ``runner``'s file accepts, each with its count of real images (a static
    batch's last part is padded with zeros)."""
    accepts = runner.batches
    if accepts is None or (not accepts.is_static and accepts.high is None):
        yield x, len(x)
        return
    size = accepts.low if accepts.is_static else int(accepts.high or 1)
    for start in range(0, len(x), size):
        part = x[start : start + size]
        n = len(part)
        if accepts.is_static and n < size:
            part = torch.cat([part, part.new_zeros(size - n, *part.shape[1:])])
        yield part, n


def top1(
    forward: Callable[[torch.Tensor], Any], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """Top-1 in percent of ``forward``'s outputs (tensor or NumPy logits) on ``batches`` of (x, labels)."""
    correct = total = 0
    for x, y in batches:
        out = forward(x)
        logits = out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    if not total:
        raise ExportError("no evaluation images to measure top-1 on; give --calib data with test images")
    return 100.0 * correct / total


@dataclass
class Int8Run:
    """What :func:`export_int8_points` did: the files written (``results``; each also recorded in the
    manifest as a variant) and the programs refused for their drop (one message each)."""

    results: list[ExportResult]
    refused: list[str]


def top1_score(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> Score:
    """The :data:`Score` of a top-1 front: ``{"top1": ...}`` of a program's logits on ``batches()``."""
    return lambda forward: {"top1": top1(forward, batches())}


def export_int8_points(
    rt: SlimmableRuntime,
    points: Sequence[FrontPoint],
    formats: Sequence[str],
    out_dir: str | os.PathLike[str],
    calib: Calibration,
    score: Score,
    split: dict[str, Any],
    *,
    batch: Any = 1,
    max_drop: float = DEFAULT_MAX_DROP,
    force: bool = False,
    on_done: Callable[[str], None] | None = None,
) -> Int8Run:
    """Export each point of ``points`` as int8 in each format of ``formats`` to ``out_dir/<point>.int8<ext>``.

    ``score(forward)`` measures a program on the evaluation images: ``{"top1": ...}`` for a top-1 front
    (:func:`top1_score`), every declared figure for a front ranked by its own metric (a task's
    ``evaluate``, which only calls ``forward`` on its batches). Each point's fp32 figures are measured
    (its sliced model in PyTorch) and each int8 program's on the same images in its runtime; a program
    worse than fp32 by more than ``max_drop`` in the front's ranking metric (a drop of top-1 or mIoU, a
    rise of a loss) is refused (not written, listed in ``refused``) unless ``force``. Every file written
    is recorded in ``out_dir/export.json`` and, as a :class:`~pareco_runtime.manifest.Variant` with
    ``split`` (the evaluation images' record), in the manifest, replacing the variant of the same
    precision and backend (whose latencies were of the old file). ``on_done`` gets one line per program.
    """
    check_int8_formats(formats)
    metric = rt.front.metric
    if max_drop < 0:
        raise ExportError(f"--max-drop {max_drop:g}: give a non-negative number of {_unit(metric)}")
    say = on_done or (lambda _line: None)
    run = Int8Run([], [])
    for p in points:
        model = rt.standalone(p)
        with torch.no_grad():
            reference = dict(score(model))
            like = model(calib.batches[0][:1])  # the structure the programs' outputs are scored in
        for fmt in formats:
            accept = _accuracy_check(p.id, fmt, metric, reference, score, split, max_drop, force, like)
            try:
                (res,) = export_points(rt, [p], [fmt], out_dir, batch=batch, int8=calib, accept=accept)
            except DropError as exc:
                run.refused.append(str(exc))
                say(str(exc))
                continue
            run.results.append(res)
            variant = Variant(
                precision="int8",
                backend=served_backend(fmt),
                top1=res.details.get("top1"),
                fp32_top1=res.details.get("fp32_top1"),
                split=split,
                bytes=res.bytes,
                metrics=res.details.get("metrics", {}),
                fp32_metrics=res.details.get("fp32_metrics", {}),
            )
            record_variant(rt, p.id, variant)
            say(f"{res.path.name}: {variant_scores(metric, variant)}, {res.bytes / 1024:.0f} KiB")
    return run


def _unit(metric: Metric) -> str:
    return f"{metric.rank} units" if metric.declared else "top-1 points"


def variant_scores(metric: Metric, variant: Variant) -> str:
    """A program's ranking figure beside fp32's: ``top-1 91.00 % (fp32 91.50 %)``, ``miou 70.1 (fp32 71.3)``."""
    now, was = metric.variant_scores(variant)
    if not metric.declared:
        return f"top-1 {now:.2f} % (fp32 {was:.2f} %)"
    return f"{metric.rank} {now:.4g} (fp32 {was:.4g})"


def result_scores(metric: Metric, details: Mapping[str, Any]) -> tuple[float, float]:
    """(the program's, fp32's) figure of the ranking ``metric`` in an int8 export's ``details``."""
    if metric.declared:
        return details["metrics"][metric.rank], details["fp32_metrics"][metric.rank]
    return details["top1"], details["fp32_top1"]


def program_forward(runner: Runner, like: Any = None) -> Callable[[torch.Tensor], Any]:
    """A forward through ``runner`` for batches of any size (cut to what its file accepts), its outputs
    as tensors in the structure of ``like``, an output of the point's PyTorch model (a segmentation
    model's ``{"out", "aux"}``: what a task's ``evaluate`` reads as a model's); one tensor without it."""

    def forward(x: torch.Tensor) -> Any:
        parts = [(runner.outputs(part), n) for part, n in _chunks(x, runner)]
        flat = [
            torch.from_numpy(np.concatenate([outs[i][:n] for outs, n in parts]))
            for i in range(len(parts[0][0]))
        ]
        if like is None:
            if len(flat) != 1:
                raise ExportError(
                    f"{runner.path.name} returns {len(flat)} outputs; give the model's output structure"
                )
            return flat[0]
        return unflatten_outputs(flat, like)

    return forward


def _accuracy_check(
    point: str,
    fmt: str,
    metric: Metric,
    reference: Mapping[str, float],
    score: Score,
    split: dict[str, Any],
    max_drop: float,
    force: bool,
    like: Any,
) -> Callable[[Runner], dict[str, Any]]:
    """The check of a loaded int8 program of ``point``: its ``score`` against the fp32 ``reference`` in the
    front's ranking ``metric``; :class:`DropError` when worse by more than ``max_drop`` unless
    ``force``; else the figures to record: ``top1`` and ``fp32_top1`` of a top-1 front, ``metrics``
    and ``fp32_metrics`` of a front ranked by its own metric, and ``split``. ``like``: an output of the
    point's PyTorch model, whose structure the program's outputs are given in."""

    def accept(runner: Runner) -> dict[str, Any]:
        measured = dict(score(program_forward(runner, like)))
        was, now = reference[metric.rank], measured[metric.rank]
        drop = metric.worse_by(was, now)
        if drop > max_drop and not force:
            if metric.declared:
                what = f"{metric.rank} {now:.4g}, {drop:.4g} worse than fp32's {was:.4g}"
            else:
                what = f"{now:.2f} % top-1, {drop:.2f} points below fp32's {was:.2f} %"
            raise DropError(
                f"{point}: its int8 {fmt} program scores {what} (allowed {max_drop:g}, --max-drop); not "
                "written; calibrate on more images (--calib-batches) or pass --force to keep it"
            )
        if not metric.declared:  # as export.json has recorded a top-1 front's programs since format 3
            return {"top1": now, "fp32_top1": was, "split": split}
        return {"metrics": measured, "fp32_metrics": dict(reference), "split": split}

    return accept


def record_variant(rt: SlimmableRuntime, point: str, variant: Variant) -> None:
    """Write ``variant`` of ``point`` into ``rt``'s manifest under its lock, replacing the point's variant
    of the same precision and backend; refused when the manifest's weight file changed since ``rt``
    loaded it."""
    path = rt.front.path
    if path is None:
        raise ExportError("the front has no manifest file to record int8 variants in; save it first")
    with Front.update(path) as front:
        if front.weights_sha256 != rt.front.weights_sha256:
            raise ExportError(
                f"{path}: its weight file changed during the export; export again from the new weights"
            )
        target = next(q for q in front.points if q.id == point)
        target.variants = [v for v in target.variants if v.key != variant.key] + [variant]
