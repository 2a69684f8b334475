"""BatchNorm recalibration per config, and evaluation of a config with its statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pareco_runtime.models.base import BNStats, SlimmableNet


@torch.no_grad()
def calibrate_bn(
    model: SlimmableNet,
    alpha: Sequence[float],
    batches: Iterable[Any],
    forward: Callable[[SlimmableNet, Any], Any] | None = None,
) -> BNStats:
    """Statistics of every BN layer at config ``alpha``, as the cumulative average over ``batches``
    (input tensors, or batches of any structure that ``forward(model, batch)`` runs).

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
                if forward is None:
                    model(x)
                else:
                    forward(model, x)
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
    with model.config(alpha, stats):
        return score(model, batches)


@torch.no_grad()
def score(
    forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> Evaluation:
    """Top-1 and mean cross-entropy of the logits ``forward`` gives each batch ``(x, y)`` of ``batches``
    (a model at a config, or a runtime's active point); ValueError when there are no images."""
    tally = Tally()
    for x, y in batches:
        tally.add(forward(x), y)
    return tally.result()


@dataclass
class Tally:
    """Running sums of correct predictions, images and cross-entropy, for scoring batch by batch."""

    correct: int = 0
    total: int = 0
    loss_sum: float = 0.0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: its ``logits`` against its ``labels``."""
        out = logits.float()
        self.loss_sum += F.cross_entropy(out, labels, reduction="sum").item()
        self.correct += int((out.argmax(1) == labels).sum().item())
        self.total += labels.numel()

    def result(self) -> Evaluation:
        """Top-1 in percent and mean cross-entropy of what was counted; ValueError when nothing was."""
        if self.total == 0:
            raise ValueError("evaluation got no validation images; the data has an empty validation split")
        return Evaluation(top1=100.0 * self.correct / self.total, loss=self.loss_sum / self.total)
