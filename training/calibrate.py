"""BatchNorm recalibration per config, and evaluation of a config with its statistics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.ops import SlimBatchNorm2d

BNStats = list[tuple[torch.Tensor, torch.Tensor]]


def _bns(model: SlimmableNet) -> list[SlimBatchNorm2d]:
    return sorted((m for m in model.modules() if isinstance(m, SlimBatchNorm2d)), key=lambda m: m.bn_index)


@torch.no_grad()
def calibrate_bn(model: SlimmableNet, alpha: Sequence[float], batches: Iterable[torch.Tensor]) -> BNStats:
    """Statistics of every BN layer at config ``alpha``, as the cumulative average over ``batches``.

    Resets the running buffers and forwards in train mode with ``momentum=None`` (an exact mean of
    the per-batch statistics, as US-Nets recalibrate). Returns one ``(mean, var)`` pair per BN layer
    in ``bn_index`` order, each of the active size and detached from the model's buffers. The
    model's running buffers are left holding the calibrated values; its mode and momentum are
    restored.
    """
    bns = _bns(model)
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = model.training
    model.set_widths(alpha)
    model.ctx.bn_stats = None
    model.train()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    seen = 0
    for x in batches:
        model(x)
        seen += 1
    if seen == 0:
        raise ValueError("BN calibration got no batches; the training set is smaller than one calibration batch")
    stats = []
    for bn in bns:
        k = model.ctx.ch[bn.out_slot]
        stats.append((bn.running_mean[:k].clone(), bn.running_var[:k].clone()))
    for bn, (momentum, _) in zip(bns, saved):
        bn.momentum = momentum
    model.train(was_training)
    return stats


@dataclass
class Evaluation:
    """Validation result of one config: top-1 in percent and mean cross-entropy."""

    top1: float
    loss: float


@torch.no_grad()
def evaluate(model: SlimmableNet, alpha: Sequence[float], stats: BNStats | None,
             batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Top-1 and loss of config ``alpha`` with BN statistics ``stats`` (running buffers when None)."""
    was_training = model.training
    model.eval()
    model.set_widths(alpha)
    model.ctx.bn_stats = stats
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in batches:
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            total += y.numel()
    finally:
        model.ctx.bn_stats = None
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluation got no validation images; the data has an empty validation split")
    return Evaluation(top1=100.0 * correct / total, loss=loss_sum / total)
