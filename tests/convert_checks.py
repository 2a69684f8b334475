"""Helpers the converter tests share: torch's own MAC count of a network, and a network warmed up so
that its BatchNorm statistics are not the initial ones."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def counted_macs(net: nn.Module, size: tuple[int, ...]) -> int:
    """MACs of one ``size`` input through ``net`` as torch's FLOP counter counts them."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, *size))
    return counter.get_total_flops() // 2


def warmed(net: nn.Module, size: tuple[int, ...]) -> nn.Module:
    """``net`` with non-trivial BN statistics (so that full-width equality tests them), in eval mode."""
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, *size))
    return net.eval()
