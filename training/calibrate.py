"""BatchNorm recalibration per config, and evaluation of a config with its statistics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pareco_runtime.models.base import BNStats, SlimmableNet


@torch.no_grad()
def calibrate_bn(model: SlimmableNet, alpha: Sequence[float], batches: Iterable[torch.Tensor]) -> BNStats:
    """Statistics of every BN layer at config ``alpha``, as the cumulative average over ``batches``.

    Resets the running buffers and forwards in train mode with ``momentum=None`` (an exact mean of
    the per-batch statistics, as US-Nets recalibrate). Returns one ``(mean, var)`` pair per BN layer
    in ``model.bn_layers`` order, each of the active size and detached from the model's buffers. The
    model is left exactly as it was: widths, running buffers, momentum and mode.
    """
    bns = [bn for _, bn in model.bn_layers]
    momenta = [bn.momentum for bn in bns]
    with model.config(alpha, train=True):
        try:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
            seen = 0
            for x in batches:
                model(x)
                seen += 1
            if seen == 0:
                raise ValueError(
                    "BN calibration got no batches; the training set is smaller than one calibration batch"
                )
            return model.current_bn_stats()
        finally:
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum


@dataclass
class Evaluation:
    """Validation result of one config: top-1 in percent and mean cross-entropy."""

    top1: float
    loss: float


@torch.no_grad()
def evaluate(
    model: SlimmableNet,
    alpha: Sequence[float],
    stats: BNStats | None,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> Evaluation:
    """Top-1 and loss of config ``alpha`` with BN statistics ``stats`` (running buffers when None).

    The model is left exactly as it was (widths, statistics, mode).
    """
    correct, total, loss_sum = 0, 0, 0.0
    with model.config(alpha, stats):
        for x, y in batches:
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            total += y.numel()
    if total == 0:
        raise ValueError("evaluation got no validation images; the data has an empty validation split")
    return Evaluation(top1=100.0 * correct / total, loss=loss_sum / total)
