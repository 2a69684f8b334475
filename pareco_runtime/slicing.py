"""Slicing: turn one config of a slimmable model into a standalone model of plain layers."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .models.base import SlimmableNet
from .ops import _Slim


def _plain_copy(module: nn.Module) -> nn.Module:
    if isinstance(module, _Slim):
        return module.to_plain()
    new = copy.copy(module)
    new.__dict__ = dict(module.__dict__.items())
    new._parameters = {
        k: (None if p is None else nn.Parameter(p.detach().clone(), p.requires_grad))
        for k, p in module._parameters.items()
    }
    new._buffers = {k: (None if b is None else b.detach().clone()) for k, b in module._buffers.items()}
    new._modules = {k: (None if m is None else _plain_copy(m)) for k, m in module._modules.items()}
    return new


def slice_model(
    model: SlimmableNet,
    alpha: Sequence[float] | None = None,
    bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """A standalone copy of ``model`` at config ``alpha`` (the active one when None).

    The result is an instance of the architecture's plain class built from ordinary
    ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` layers whose tensors are copies of the active
    slices: no masks, hooks or references to the slimmable model. BatchNorm layers carry
    ``bn_stats`` when given (one ``(mean, var)`` per BN layer, as a front point stores them), else
    the context's per-point statistics if set, else the running buffers. In eval mode its outputs
    equal the slimmable model's at that config. The model is left exactly as it was (widths, statistics,
    mode); statistics that do not fit the config raise ``BNStatsError``.
    """
    stats = model.ctx.bn_stats if bn_stats is None else bn_stats
    with model.config(alpha, stats, train=model.training), torch.no_grad():
        root = model.plain_class.__new__(model.plain_class)
        nn.Module.__init__(root)
        for name, child in model.named_children():
            setattr(root, name, _plain_copy(child))
        for name in model.plain_attributes:
            setattr(root, name, copy.deepcopy(getattr(model, name)))
        # setattr: torch types nn.Module attribute assignment as tensors and modules only.
        described = {
            "arch": model.arch,
            "alpha": list(model.alpha),
            "channels": model.channels(),
            "input_size": model.input_size,
        }
        for name, value in described.items():
            setattr(root, name, value)
        root.train(model.training)
        return root
