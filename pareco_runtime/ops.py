"""Slimmable layers: Conv2d, Conv1d, Linear, BatchNorm2d, BatchNorm1d and LayerNorm that run with the first k
channels (a grouped conv: its first groups), and modules whose own per-channel parameters (a layer scale)
read the first k entries.

Every slimmable layer of a network reads its active channel counts from one shared
:class:`SlimContext`, through two integer *slots* (input and output). Activating a config is
therefore a write of a few integers into one list: no tensor is allocated, no module attribute
is set, and forward passes use views of the full-width parameters.

A side that reads a concatenation has several *parts*, ``(full offset, slot)`` each: the block of
channels starting at that offset of the full-width layer, of which the first ``ch[slot]`` are active.
The active channels of that side are those of every part, laid end to end in order.
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


# ``(offset of the block in the full-width channels, slot of its active count)`` per block of one side.
Parts = tuple[tuple[int, int], ...]


def take(t: torch.Tensor, dim: int, parts: Parts, counts: tuple[int, ...]) -> torch.Tensor:
    """The active channels of ``t`` along ``dim``: the first ``counts[j]`` of block ``parts[j]``, laid end
    to end (a view of a prefix when there is one part)."""
    if len(parts) == 1:
        return t.narrow(dim, parts[0][0], counts[0])
    return torch.cat([t.narrow(dim, off, k) for (off, _), k in zip(parts, counts)], dim)


def width(parts: Parts, values: list[int]) -> int:
    """The active channel count of a side whose parts read the slot values ``values``."""
    return sum(values[s] for _, s in parts)


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
    in_parts: Parts = ()
    out_parts: Parts = ()
    # Input entries per channel of the input slots: H*W for a Linear reading a flattened [N, C, H, W] map,
    # whose active features are the first k*H*W of each block (set by make_slimmable; SlimLinear reads it).
    in_span: int = 1
    # One part a side: the key is two slot reads (0.3 µs, against 1.0 µs for the general form).
    _prefix: bool = True
    ctx: SlimContext
    _cache: tuple = ((), ())
    # Each slimmable layer defines these two: views of its tensors at widths ``key`` (read by
    # :meth:`views`), and a plain torch layer holding copies of the active slices.
    slice_tensors: Callable[[tuple[int, ...]], tuple]
    to_plain: Callable[[], nn.Module]

    def bind(
        self, ctx: SlimContext, in_slot: int, out_slot: int, in_parts: Parts = (), out_parts: Parts = ()
    ) -> None:
        """Read the context's slots: a prefix of ``in_slot`` / ``out_slot`` channels, or ``in_parts`` /
        ``out_parts`` when given (a side that reads a concatenation; its slot is then the first part's)."""
        object.__setattr__(self, "ctx", ctx)
        object.__setattr__(self, "in_slot", in_parts[0][1] if in_parts else in_slot)
        object.__setattr__(self, "out_slot", out_parts[0][1] if out_parts else out_slot)
        object.__setattr__(self, "in_parts", tuple(in_parts) or ((0, in_slot),))
        object.__setattr__(self, "out_parts", tuple(out_parts) or ((0, out_slot),))
        object.__setattr__(self, "_prefix", len(self.in_parts) == len(self.out_parts) == 1)

    def active(self) -> tuple[int, int]:
        """(input channels, output channels) under the current config (input features: channels x span)."""
        ch = self.ctx.ch
        return width(self.in_parts, ch) * self.in_span, width(self.out_parts, ch)

    def key(self) -> tuple[int, ...]:
        """The active count of every output part, then of every input part: what :meth:`views` slices."""
        ch = self.ctx.ch
        if self._prefix:
            return ch[self.out_slot], ch[self.in_slot]
        return (*(ch[s] for _, s in self.out_parts), *(ch[s] for _, s in self.in_parts))

    def views(self, key: tuple[int, ...]) -> tuple:
        """The sliced tensors for widths ``key`` (cached, contiguous, while autograd is off)."""
        if torch.is_grad_enabled():
            return self.slice_tensors(key)
        weight, bias = self.weight, self.bias  # type: ignore[attr-defined]
        full_key = (*key, -1 if weight is None else weight._version, -1 if bias is None else bias._version)
        cached = self._cache
        if cached[0] == full_key:
            return cached[1]
        tensors = tuple(None if t is None else t.contiguous() for t in self.slice_tensors(key))
        object.__setattr__(self, "_cache", (full_key, tensors))
        return tensors


def _plain_conv(conv: _SlimConv, plain_type: type[nn.Conv1d] | type[nn.Conv2d]) -> nn.Conv1d | nn.Conv2d:
    """A plain ``plain_type`` conv like ``conv``, holding copies of its active slices (of its active groups)."""
    i, o = conv.active()
    weight, bias = conv.slice_tensors(conv.key())
    # Typed Any: torch types each rank's sizes as tuples of that rank, conv attributes as tuple[int, ...].
    sizes: dict[str, Any] = {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
    }
    plain = plain_type(i, o, groups=conv.active_groups(o), bias=conv.bias is not None, **sizes)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None and plain.bias is not None:
            plain.bias.copy_(bias)
    return plain


class _SlimConv(_Slim):
    """What the slimmable convs share: ``groups == 1``, or grouped with as many input as output channels
    (depthwise: one channel a group), which runs the first active groups, each of its full size (the
    active channels are whole groups: the width space's channel step); ``_functional`` is the conv op
    of their rank."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int
    in_channels: int
    out_channels: int
    stride: Any
    padding: Any
    dilation: Any
    kernel_size: Any
    _functional: Callable[..., torch.Tensor]

    def _check_groups(self) -> None:
        self.grouped = self.groups > 1
        if self.grouped and self.in_channels != self.out_channels:
            raise ValueError(
                f"{type(self).__name__} supports groups == 1, or groups > 1 with as many input as output "
                f"channels, got groups={self.groups} for {self.in_channels} -> {self.out_channels}"
            )
        # Channels per group, which every active width is a multiple of.
        self.group_width = self.out_channels // self.groups

    def active_groups(self, out: int) -> int:
        """The group count at ``out`` active output channels."""
        return out // self.group_width if self.grouped else 1

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        n = len(self.out_parts)
        w = take(self.weight, 0, self.out_parts, key[:n])
        if not self.grouped:
            w = take(w, 1, self.in_parts, key[n:])
        return w, None if self.bias is None else take(self.bias, 0, self.out_parts, key[:n])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self.key()
        w, b = self.views(key)
        groups = self.active_groups(w.shape[0])
        return type(self)._functional(x, w, b, self.stride, self.padding, self.dilation, groups)


class SlimConv2d(_SlimConv, nn.Conv2d):
    """``nn.Conv2d`` using the first (out, in) channels of its weight.

    Supports ordinary convs (``groups == 1``) and grouped convs with as many input as output channels
    (depthwise ones included), where the group count follows the active width.
    """

    _functional = F.conv2d

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_groups()

    def to_plain(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding copies of the active slices."""
        return _plain_conv(self, nn.Conv2d)  # type: ignore[return-value]


class SlimConv1d(_SlimConv, nn.Conv1d):
    """``nn.Conv1d`` (inputs ``[N, C, L]``) using the first (out, in) channels of its weight; ordinary or
    grouped, as :class:`SlimConv2d`."""

    _functional = F.conv1d

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_groups()

    def to_plain(self) -> nn.Conv1d:
        """A plain ``nn.Conv1d`` holding copies of the active slices."""
        return _plain_conv(self, nn.Conv1d)  # type: ignore[return-value]


class SlimLinear(_Slim, nn.Linear):
    """``nn.Linear`` using the first (out, in) features of its weight (of each block of a side with
    several parts: a concatenation's input blocks, a fused q/k/v projection's three output blocks).
    Reading a flattened ``[N, C, H, W]`` map (``in_span`` H*W), an input block of c channels is c*H*W
    features, of which the first k*H*W are active: the features of its first k channels."""

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        n, span = len(self.out_parts), self.in_span
        parts = self.in_parts if span == 1 else tuple((off * span, slot) for off, slot in self.in_parts)
        w = take(take(self.weight, 0, self.out_parts, key[:n]), 1, parts, tuple(k * span for k in key[n:]))
        return w, None if self.bias is None else take(self.bias, 0, self.out_parts, key[:n])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.views(self.key())
        return F.linear(x, w, b)

    def to_plain(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding copies of the active slices."""
        i, o = self.active()
        weight, bias = self.slice_tensors(self.key())
        plain = nn.Linear(i, o, bias=bias is not None)
        with torch.no_grad():
            plain.weight.copy_(weight)
            if bias is not None:
                plain.bias.copy_(bias)
        return plain


class SlimBatchNorm2d(_Slim, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the first k channels of shared affine parameters and statistics (of each
    block, over a concatenation).

    In training mode it normalises with batch statistics and updates the active entries of the
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
        key = self.key()[: len(self.out_parts)]
        if self.training:
            w, b = self.slice_tensors(key)
            if not self.track_running_stats:
                return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            mean, var = self._running(key)
            out = F.batch_norm(x, mean, var, w, b, True, factor, self.eps)
            if len(self.out_parts) > 1:  # the statistics of a concatenation are copies: write them back
                with torch.no_grad():
                    for buffer, new in ((self.running_mean, mean), (self.running_var, var)):
                        for (off, _), part in zip(self.out_parts, new.split(key)):
                            buffer.narrow(0, off, part.numel()).copy_(part)
            return out
        mean, var = self.eval_stats()
        w, b = self.views(key)
        return F.batch_norm(x, mean, var, w, b, False, 0.0, self.eps)

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        return take(self.weight, 0, self.out_parts, key), take(self.bias, 0, self.out_parts, key)

    def _running(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return take(self.running_mean, 0, self.out_parts, key), take(self.running_var, 0, self.out_parts, key)

    def eval_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics eval mode uses at the active width."""
        stats = self.ctx.bn_stats
        if stats is not None:
            return stats[self.bn_index]
        return self._running(self.key()[: len(self.out_parts)])

    def to_plain(self) -> nn.BatchNorm2d | nn.BatchNorm1d:
        """A plain ``nn.BatchNorm2d`` (``nn.BatchNorm1d``) with the active affine slices and eval statistics."""
        weight, bias = self.slice_tensors(self.key()[: len(self.out_parts)])
        plain = self._plain_type(weight.numel(), eps=self.eps, momentum=self.momentum)
        mean, var = self.eval_stats()
        # Built with the default track_running_stats=True, so it has its running buffers.
        assert plain.running_mean is not None and plain.running_var is not None
        assert plain.num_batches_tracked is not None
        with torch.no_grad():
            plain.weight.copy_(weight)
            plain.bias.copy_(bias)
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


class SlimLayerNorm(_Slim, nn.LayerNorm):
    """A LayerNorm over one channel axis that normalises the first k channels (of each block, over a
    concatenation) with their own mean and variance, and scales them by the first k entries of its
    weight and bias.

    At a narrower width it is therefore another normaliser than the full one: its statistics are those of
    the active channels only. The slimmable model and its slices compute the same thing exactly.
    ``channels_first``: the channel axis is dimension 1 of an ``[N, C, H, W]`` input, normalised as
    torchvision's and timm's ``LayerNorm2d`` do it (permute to channels-last, normalise, permute back);
    else it is the last axis (``nn.LayerNorm(C)``). ``plain_type`` is the original layer's class and
    ``plain_attributes`` its own extra attributes: the plain twin is that class at the active width.
    """

    def __init__(
        self,
        *args: Any,
        channels_first: bool = False,
        plain_type: type[nn.LayerNorm] = nn.LayerNorm,
        plain_attributes: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.channels_first = channels_first
        self.plain_type = plain_type
        self.plain_attributes = dict(plain_attributes or {})

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        n = len(self.out_parts)
        return tuple(
            None if t is None else take(t, 0, self.out_parts, key[:n]) for t in (self.weight, self.bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.views(self.key())
        if self.channels_first:
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, self.eps)
            return y.permute(0, 3, 1, 2)
        return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)

    def to_plain(self) -> nn.LayerNorm:
        """The original LayerNorm class over the active channels, holding copies of the active slices."""
        weight, bias = self.slice_tensors(self.key())
        plain = nn.LayerNorm(
            width(self.out_parts, self.ctx.ch),
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            bias=bias is not None,
        )
        # Every class make_slimmable takes for a LayerNorm is nn.LayerNorm's state and forward over it.
        plain.__class__ = self.plain_type
        plain.__dict__.update(copy.deepcopy(self.plain_attributes))
        with torch.no_grad():
            for mine, sliced in ((plain.weight, weight), (plain.bias, bias)):
                if mine is not None:
                    mine.copy_(sliced)
        return plain


class SlimChannelParameters(_Slim):
    """Mixin of a module whose own per-channel parameters (ConvNeXt's layer scale, ``[C]`` or ``[C, 1, 1]``)
    its ``forward`` reads as attributes: each such read returns the first k channels (of each block).

    :func:`~pareco_runtime.convert.make_slimmable` gives such a module a subclass of its own class with this
    mixin and one property per parameter in ``channel_dims`` (name: the parameter's channel dimension), so
    its ``forward`` and ``state_dict`` stay the original's. Both sides of its binding are the channels of
    those parameters. :meth:`plain_parameters` are copies of the active slices for its plain twin.
    """

    plain_type: type[nn.Module]
    channel_dims: dict[str, int]
    _parameters: dict[str, nn.Parameter | None]

    def channel_parameter(self, name: str) -> torch.Tensor:
        """Parameter ``name`` at the active width (the parameter itself at full width)."""
        p = self._parameters[name]
        assert p is not None
        counts = self.key()[: len(self.out_parts)]
        dim = self.channel_dims[name]
        if len(counts) == 1 and counts[0] == p.shape[dim]:
            return p
        return take(p, dim, self.out_parts, counts)

    def plain_parameters(self) -> dict[str, nn.Parameter]:
        """Copies of the active slices of the per-channel parameters, by name."""
        return {
            name: nn.Parameter(self.channel_parameter(name).detach().clone(), p.requires_grad)
            for name, p in self._parameters.items()
            if name in self.channel_dims and p is not None
        }


# One class per (class, parameter names), made once: every converted module of a block type shares it.
_CHANNEL_PARAMETERS_CLASSES: dict[tuple[type[nn.Module], tuple[str, ...]], type[nn.Module]] = {}


def channel_parameters_class(plain_type: type[nn.Module], names: tuple[str, ...]) -> type[nn.Module]:
    """The subclass of ``plain_type`` with :class:`SlimChannelParameters` whose attributes ``names`` read
    the active slices of the parameters so named."""
    made = _CHANNEL_PARAMETERS_CLASSES.get((plain_type, names))
    if made is not None:
        return made

    def read(name: str) -> property:
        return property(lambda self: self.channel_parameter(name))

    members: dict[str, Any] = {name: read(name) for name in names}
    members["plain_type"] = plain_type
    made = type(f"Slim{plain_type.__name__}", (SlimChannelParameters, plain_type), members)
    _CHANNEL_PARAMETERS_CLASSES[(plain_type, names)] = made
    return made


class SlimHeadCount(_Slim):
    """Mixin of an attention module whose ``forward`` reads its head count and its heads' channel count
    from attributes (timm's ``Attention``: ``num_heads``, ``attn_dim``): under a config they read the
    active heads, so the original ``forward`` reshapes its narrower projections.

    Both sides of its binding are the heads' channels (whole heads: multiples of the head size).
    :func:`~pareco_runtime.convert.make_slimmable` gives such a module a subclass of its class with this
    mixin (:func:`head_count_class`); the instance keeps the full values, which give the head size.
    """

    plain_type: type[nn.Module]
    head_attributes: tuple[str, str]

    def active_heads(self) -> dict[str, int]:
        """The head-count and channel-count attributes at the active width, by name."""
        count, channels = self.head_attributes
        size = self.__dict__[channels] // self.__dict__[count]
        active = self.ctx.ch[self.out_slot]
        return {count: active // size, channels: active}


_HEAD_COUNT_CLASSES: dict[tuple[type[nn.Module], tuple[str, str]], type[nn.Module]] = {}


def head_count_class(plain_type: type[nn.Module], attributes: tuple[str, str]) -> type[nn.Module]:
    """The subclass of ``plain_type`` with :class:`SlimHeadCount` whose ``attributes`` (head count, heads'
    channels) read the active values."""
    made = _HEAD_COUNT_CLASSES.get((plain_type, attributes))
    if made is None:

        def read(name: str) -> property:
            return property(lambda self: self.active_heads()[name])

        members: dict[str, Any] = {name: read(name) for name in attributes}
        members.update(plain_type=plain_type, head_attributes=attributes)
        made = type(f"Slim{plain_type.__name__}", (SlimHeadCount, plain_type), members)
        _HEAD_COUNT_CLASSES[(plain_type, attributes)] = made
    return made


def heads_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    tensors: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    heads: tuple[int, int],
    need_weights: bool,
    masked: bool,
) -> tuple[torch.Tensor, None]:
    """``nn.MultiheadAttention``'s output (``need_weights=False``, no masks) with ``heads`` = (heads, their
    channels) from ``tensors`` = (in-projection weight ``[3 x channels, E]`` and bias, out-projection
    weight ``[E, channels]`` and bias), its embedding width ``E`` that of ``query``."""
    if need_weights or masked:
        raise ValueError(
            f"{type(module).__name__}: a narrower nn.MultiheadAttention runs without attention weights or "
            "masks; call it with need_weights=False and no masks, or pin it"
        )
    batch_first = bool(getattr(module, "batch_first", False))
    w_in, b_in, w_out, b_out = tensors
    count, channels = heads
    projected = []
    # Slices by Python ints: the plain twin's forward is traced, its tensors then proxies.
    for j, x in enumerate((query, key, value)):
        tokens = x if batch_first else x.transpose(0, 1)
        rows = slice(j * channels, (j + 1) * channels)
        y = F.linear(tokens, w_in[rows], None if b_in is None else b_in[rows])
        projected.append(y.unflatten(-1, (count, -1)).transpose(1, 2))
    p = float(getattr(module, "dropout", 0.0)) if module.training else 0.0
    q, k, v = projected
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    y = F.linear(y.transpose(1, 2).flatten(2), w_out, b_out)
    return (y if batch_first else y.transpose(0, 1)), None


class HeadsMultiheadAttention(nn.Module):
    """The plain twin of a :class:`SlimMultiheadAttention` at fewer heads: ``nn.MultiheadAttention``'s
    parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) at ``heads`` heads of
    ``head_size`` channels on an embedding of ``embed_dim``, which ``nn.MultiheadAttention`` cannot hold
    (its heads span its embedding). Called as it: ``(query, key, value, need_weights=False)``."""

    def __init__(
        self, embed_dim: int, heads: int, head_size: int, bias: bool, batch_first: bool, dropout: float
    ) -> None:
        super().__init__()
        self.heads, self.batch_first, self.dropout = (heads, heads * head_size), batch_first, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * heads * head_size, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * heads * head_size)) if bias else None
        self.out_proj = nn.Linear(heads * head_size, embed_dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """The attention output of the active heads, and None for the weights."""
        tensors = (self.in_proj_weight, self.in_proj_bias, self.out_proj.weight, self.out_proj.bias)
        masked = key_padding_mask is not None or attn_mask is not None or is_causal
        return heads_attention(self, query, key, value, tensors, self.heads, need_weights, masked)


class SlimMultiheadAttention(_Slim, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (self-attention of one embedding width, q/k/v packed in
    ``in_proj_weight``) running its first heads: the first rows of each of q, k and v in the
    in-projection, the first columns of the out-projection, and the first embedding channels of both.

    Its input side is the embedding's channels, its output side the heads' (whole heads). At full width
    it is ``nn.MultiheadAttention``'s own forward (its fused fast path included); narrower, the same
    computation by :func:`heads_attention`, which its plain twin (:class:`HeadsMultiheadAttention`) runs.
    """

    def slice_tensors(self, key: tuple[int, ...]) -> tuple:
        channels, embed = key
        size = self.embed_dim
        w_in = torch.cat([self.in_proj_weight[j * size : j * size + channels, :embed] for j in range(3)])
        b = self.in_proj_bias
        b_in = None if b is None else torch.cat([b[j * size : j * size + channels] for j in range(3)])
        w_out = self.out_proj.weight[:embed, :channels]
        b_out = None if self.out_proj.bias is None else self.out_proj.bias[:embed]
        return w_in, b_in, w_out, b_out

    def _full(self) -> bool:
        channels, embed = self.key()
        return channels == embed == self.embed_dim

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``nn.MultiheadAttention.forward`` at full width; the active heads' output otherwise."""
        if self._full():
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        masked = key_padding_mask is not None or attn_mask is not None or is_causal
        channels = self.key()[0]
        heads = (channels // self.head_dim, channels)
        return heads_attention(
            self, query, key, value, self.slice_tensors(self.key()), heads, need_weights, masked
        )

    def to_plain(self) -> nn.Module:
        """A plain ``nn.MultiheadAttention`` at full width, else a :class:`HeadsMultiheadAttention`,
        holding copies of the active slices."""
        channels, embed = self.key()
        tensors = self.slice_tensors((channels, embed))
        bias = self.in_proj_bias is not None
        plain: nn.Module
        if self._full():
            plain = nn.MultiheadAttention(
                embed, self.num_heads, self.dropout, bias, batch_first=self.batch_first
            )
        else:
            plain = HeadsMultiheadAttention(
                embed, channels // self.head_dim, self.head_dim, bias, self.batch_first, self.dropout
            )
        targets = (plain.in_proj_weight, plain.in_proj_bias, plain.out_proj.weight, plain.out_proj.bias)
        with torch.no_grad():
            for mine, sliced in zip(targets, tensors):
                if mine is not None and sliced is not None:
                    mine.copy_(sliced)
        return plain

    def macs_terms(self, query_tokens: int, key_tokens: int, one: int) -> list[tuple[int, int, int]]:
        """Its MACs per sample as ``(coef, slot, slot)`` terms (``one``: the slot holding 1): the q/k/v and
        output projections (heads' channels x embedding) and the two attention matmuls (heads' channels)."""
        heads, embed = self.out_slot, self.in_slot
        return [
            (2 * query_tokens + 2 * key_tokens, heads, embed),
            (2 * query_tokens * key_tokens, heads, one),
        ]

    def params_terms(self, one: int) -> list[tuple[int, int, int]]:
        """Its parameters as ``(coef, slot, slot)`` terms (``one``: the slot holding 1)."""
        terms = [(4, self.out_slot, self.in_slot)]
        if self.in_proj_bias is not None:
            terms += [(3, self.out_slot, one), (1, self.in_slot, one)]
        return terms


SLIM_TYPES = (
    SlimConv2d,
    SlimConv1d,
    SlimLinear,
    SlimBatchNorm2d,
    SlimLayerNorm,
    SlimChannelParameters,
    SlimHeadCount,
    SlimMultiheadAttention,
)
SLIM_CONVS = (SlimConv2d, SlimConv1d)
