"""After each epoch: top-1 (or a task's own figure) of a few sub-networks on a bounded number of held-out images.

A slimmable model's running BN statistics are a mixture of every width it trained, so an
evaluation with them describes no sub-network; each config's statistics are re-estimated on the
calibration images first, as the front's points are after training (``training.front_builder``).
Nothing here draws from the global random generators (and what the model's own layers draw, such
as a dropout in train mode during calibration, is undone), so a run with this check trains the
same weights as one without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from pareco_runtime.models.base import SlimmableNet

from .calibrate import calibrate_bn, score

EVAL_BATCH = 500

Score = Callable[[SlimmableNet, Iterable[tuple[torch.Tensor, torch.Tensor]]], float]
"""The figure of the model at its active config on some batches ``(x, y)``."""


def top1(model: SlimmableNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 in percent of ``model`` on ``batches`` (the classification :data:`Score`)."""
    return score(model, batches).top1


def first_images(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], limit: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``batches`` up to ``limit`` images in all (the last one cut short)."""
    left = limit
    for x, y in batches:
        if left <= 0:
            return
        yield x[:left], y[:left]
        left -= x.shape[0]


def epoch_top1(
    model: SlimmableNet,
    configs: Mapping[str, Sequence[float]],
    data: Any,
    images: int,
    calib_batches: int,
    calib_batch_size: int,
    seed: int,
    figure: Score = top1,
    key: str = "top1",
) -> dict[str, Any]:
    """Top-1 (%) of each named config (or another ``figure``, recorded under ``key``) on the first
    ``images`` images of the selection split (the validation split where the data has none), each
    with BN statistics re-estimated on the seeded calibration batches of the front. Returns ``{key:
    {name: value}, "split": name, "images": n, "calib_images": n}``; the model, its statistics and the
    global RNG states are left as they were."""
    devices = [data.device] if data.device.type == "cuda" else []
    values = {}
    with torch.random.fork_rng(devices=devices):
        for name, alpha in configs.items():
            calib = (x for x, _ in data.calib_batches(calib_batch_size, calib_batches, seed))
            stats = calibrate_bn(model, alpha, calib)
            held_out = first_images(data.selection_batches(min(images, EVAL_BATCH)), images)
            with model.config(alpha, stats), torch.no_grad():
                values[name] = round(figure(model, held_out), 2)
    info = data.info
    return {
        key: values,
        "split": "train-holdout" if info.num_selection else info.val_split,
        "images": min(images, info.num_selection or info.num_val),
        "calib_images": min(calib_batches * calib_batch_size, info.num_train),
    }


def describe(result: Mapping[str, Any], key: str = "top1", label: str = "top-1") -> str:
    """``result`` of :func:`epoch_top1` (its figures under ``key``, shown as ``label``) as the text of a
    progress line."""
    where = (
        f"{result['images']} held-out training images"
        if result["split"] == "train-holdout"
        else f"{result['images']} {result['split']} images"
    )
    figures = ", ".join(f"{name} {value:.1f}%" for name, value in result[key].items())
    return f"{label} {figures} (on {where}, BN re-estimated on {result['calib_images']} training images)"
