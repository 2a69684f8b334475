"""Slimmable layers: Conv2d, Conv1d, Linear, BatchNorm2d and BatchNorm1d that run with the first k channels.

Every slimmable layer of a network reads its active channel counts from one shared
:class:`SlimContext`, through two integer *slots* (input and output). Activating a config is
therefore a write of a few integers into one list: no tensor is allocated, no module attribute
is set, and forward passes use views of the full-width parameters.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SlimContext:
    """Shared state of one slimmable network: the channel count of every slot.

    ``ch`` holds one entry per width dimension, then constant slots (input channels, classes,
    fixed inner widths) and a final ``1`` used by the cost model. ``bn_stats`` optionally holds,
    per BatchNorm layer (by ``bn_index``), a ``(mean, var)`` pair of exactly the active size that
    overrides the layer's running buffers in eval mode (a front point's calibrated statistics).
    """

    __slots__ = ("bn_stats", "ch")

    def __init__(self, ch: list[int]) -> None:
        self.ch = ch
        self.bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None


class _Slim:
    """Mixin holding the slots and the context reference (kept out of nn.Module bookkeeping).

    Without autograd (inference), the sliced tensors of the active width are cached per layer as
    contiguous tensors and reused until the width or the parameters change (the key holds the
    parameters' version counters, which every in-place update bumps). Slicing costs microseconds
    per tensor, and a view that drops input channels is not contiguous, which made oneDNN copy
    MobileNet's pointwise weights on every call (1.4x the standalone model's time at batch 1).
    The cache holds at most one sub-network's copies. With autograd on, views are made afresh
    each pass so every graph owns its own.
    """

    in_slot: int
    out_slot: int
    ctx: SlimContext
    _cache: tuple = ((), ())
    # Each slimmable layer defines these two: views of its tensors at widths ``key`` (read by
    # :meth:`views`), and a plain torch layer holding copies of the active slices.
    slice_tensors: Callable[[tuple[int, ...]], tuple]
    to_plain: Callable[[], nn.Module]

    def bind(self, ctx: SlimContext, in_slot: int, out_slot: int) -> None:
        object.__setattr__(self, "ctx", ctx)
        object.__setattr__(self, "in_slot", in_slot)
        object.__setattr__(self, "out_slot", out_slot)

    def active(self) -> tuple[int, int]:
        """(input channels, output channels) under the current config."""
        ch = self.ctx.ch
        return ch[self.in_slot], ch[self.out_slot]

    def views(self, key: tuple[int, ...]) -> tuple:
        """The sliced tensors for widths ``key`` (cached, contiguous, while autograd is off)."""
        if torch.is_grad_enabled():
            return self.slice_tensors(key)
        bias = self.bias  # type: ignore[attr-defined]
        full_key = (*key, self.weight._version, -1 if bias is None else bias._version)  # type: ignore[attr-defined]
        cached = self._cache
        if cached[0] == full_key:
            return cached[1]
        tensors = tuple(None if t is None else t.contiguous() for t in self.slice_tensors(key))
        object.__setattr__(self, "_cache", (full_key, tensors))
        return tensors


def _plain_conv(
    conv: nn.Conv1d | nn.Conv2d, plain_type: type[nn.Conv1d] | type[nn.Conv2d], i: int, o: int
) -> nn.Conv1d | nn.Conv2d:
    """A plain ``plain_type`` conv of (o, i) channels, like ``conv``, holding copies of its active slices."""
    depthwise = conv.groups > 1
    # Typed Any: torch types each rank's sizes as tuples of that rank, conv attributes as tuple[int, ...].
    sizes: dict[str, Any] = {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
    }
    plain = plain_type(
        o if depthwise else i, o, groups=o if depthwise else 1, bias=conv.bias is not None, **sizes
    )
    with torch.no_grad():
        plain.weight.copy_(conv.weight[:o] if depthwise else conv.weight[:o, :i])
        if conv.bias is not None and plain.bias is not None:
            plain.bias.copy_(conv.bias[:o])
    return plain


class _SlimConv(_Slim):
    """What the slimmable convs share: ``groups == 1`` or depthwise (``groups == in == out``), where the
    group count follows the active width; ``_functional`` is the conv op of their rank."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int
    in_channels: int
    out_channels: int
    stride: Any
    padding: Any
    dilation: Any
    _functional: Callable[..., torch.Tensor]

    def _check_groups(self) -> None:
        self.depthwise = self.groups > 1
        if self.depthwise and not (self.groups == self.in_channels == self.out_channels):
            raise ValueError(
                f"{type(self).__name__} supports groups == 1 or depthwise (groups == in == out channels)"
            )

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        o, i = key
        w = self.weight[:o] if self.depthwise else self.weight[:o, :i]
        return w, None if self.bias is None else self.bias[:o]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch = self.ctx.ch
        o = ch[self.out_slot]
        w, b = self.views((o, ch[self.in_slot]))
        return type(self)._functional(
            x, w, b, self.stride, self.padding, self.dilation, o if self.depthwise else 1
        )


class SlimConv2d(_SlimConv, nn.Conv2d):
    """``nn.Conv2d`` using the first (out, in) channels of its weight.

    Supports ordinary convs (``groups == 1``) and depthwise convs (``groups == in == out``), where
    the group count follows the active width.
    """

    _functional = F.conv2d

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_groups()

    def to_plain(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding copies of the active slices."""
        i, o = self.active()
        return _plain_conv(self, nn.Conv2d, i, o)  # type: ignore[return-value]


class SlimConv1d(_SlimConv, nn.Conv1d):
    """``nn.Conv1d`` (inputs ``[N, C, L]``) using the first (out, in) channels of its weight; ordinary or
    depthwise, as :class:`SlimConv2d`."""

    _functional = F.conv1d

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_groups()

    def to_plain(self) -> nn.Conv1d:
        """A plain ``nn.Conv1d`` holding copies of the active slices."""
        i, o = self.active()
        return _plain_conv(self, nn.Conv1d, i, o)  # type: ignore[return-value]


class SlimLinear(_Slim, nn.Linear):
    """``nn.Linear`` using the first (out, in) features of its weight."""

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        o, i = key
        return self.weight[:o, :i], None if self.bias is None else self.bias[:o]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch = self.ctx.ch
        w, b = self.views((ch[self.out_slot], ch[self.in_slot]))
        return F.linear(x, w, b)

    def to_plain(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding copies of the active slices."""
        i, o = self.active()
        plain = nn.Linear(i, o, bias=self.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(self.weight[:o, :i])
            if self.bias is not None:
                plain.bias.copy_(self.bias[:o])
        return plain


class SlimBatchNorm2d(_Slim, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the first k channels of shared affine parameters and statistics.

    In training mode it normalises with batch statistics and updates the first k entries of the
    running buffers (cumulative average when ``momentum`` is None, as BN calibration uses). In
    eval mode it uses the context's per-point statistics when present, else the running buffers.
    """

    bn_index: int = -1
    # The plain layer of the active slice (SlimBatchNorm1d's is nn.BatchNorm1d).
    _plain_type: type[nn.BatchNorm2d] | type[nn.BatchNorm1d] = nn.BatchNorm2d
    # Every SlimBatchNorm2d is built tracking running statistics (models/base.py, convert.py) and
    # training only toggles ``track_running_stats``, so the buffers nn.BatchNorm2d types as optional exist.
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.ctx.ch[self.out_slot]
        if self.training:
            if self.track_running_stats:
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                return F.batch_norm(
                    x,
                    self.running_mean[:k],
                    self.running_var[:k],
                    self.weight[:k],
                    self.bias[:k],
                    True,
                    factor,
                    self.eps,
                )
            return F.batch_norm(x, None, None, self.weight[:k], self.bias[:k], True, 0.0, self.eps)
        mean, var = self.eval_stats(k)
        w, b = self.views((k,))
        return F.batch_norm(x, mean, var, w, b, False, 0.0, self.eps)

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        return self.weight[: key[0]], self.bias[: key[0]]

    def eval_stats(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics eval mode uses at width ``k``."""
        stats = self.ctx.bn_stats
        if stats is not None:
            return stats[self.bn_index]
        return self.running_mean[:k], self.running_var[:k]

    def to_plain(self) -> nn.BatchNorm2d | nn.BatchNorm1d:
        """A plain ``nn.BatchNorm2d`` (``nn.BatchNorm1d``) with the active affine slices and eval statistics."""
        k = self.ctx.ch[self.out_slot]
        plain = self._plain_type(k, eps=self.eps, momentum=self.momentum)
        mean, var = self.eval_stats(k)
        # Built with the default track_running_stats=True, so it has its running buffers.
        assert plain.running_mean is not None and plain.running_var is not None
        assert plain.num_batches_tracked is not None
        with torch.no_grad():
            plain.weight.copy_(self.weight[:k])
            plain.bias.copy_(self.bias[:k])
            plain.running_mean.copy_(mean)
            plain.running_var.copy_(var)
            plain.num_batches_tracked.fill_(int(self.num_batches_tracked))
        return plain


class SlimBatchNormAct2d(SlimBatchNorm2d):
    """A :class:`SlimBatchNorm2d` followed by its channel-wise ``drop`` and ``act`` modules: the fused
    BatchNorm + activation layer of timm (``BatchNormAct2d``), with the same ``state_dict`` keys.

    Its plain twin is ``nn.Sequential(bn=BatchNorm2d, drop=..., act=...)``.
    """

    def __init__(self, num_features: int, drop: nn.Module, act: nn.Module, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))

    def to_plain(self) -> nn.Sequential:  # type: ignore[override]
        """The plain BatchNorm2d of the active slice, then copies of ``drop`` and ``act``."""
        return nn.Sequential(
            OrderedDict(bn=super().to_plain(), drop=copy.deepcopy(self.drop), act=copy.deepcopy(self.act))
        )


class SlimBatchNorm1d(SlimBatchNorm2d):
    """The slimmable BatchNorm of ``[N, C]`` and ``[N, C, L]`` inputs (``nn.BatchNorm1d``'s).

    ``F.batch_norm`` normalises per channel at any rank, so it is a :class:`SlimBatchNorm2d` (every
    per-point statistics list and BN calibration treats it as one) whose plain twin is ``nn.BatchNorm1d``
    and whose ``state_dict`` is ``nn.BatchNorm1d``'s.
    """

    _plain_type = nn.BatchNorm1d


SLIM_TYPES = (SlimConv2d, SlimConv1d, SlimLinear, SlimBatchNorm2d)
SLIM_CONVS = (SlimConv2d, SlimConv1d)
