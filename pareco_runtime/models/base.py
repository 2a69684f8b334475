"""The slimmable network base class, its layer builder and its analytic cost model."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..inputs import FLOAT, InputSpec
from ..ops import (
    SLIM_CONVS,
    SlimBatchNorm2d,
    SlimChannelParameters,
    SlimContext,
    SlimConv2d,
    SlimLayerNorm,
    SlimLinear,
    SlimMultiheadAttention,
    _Slim,
    width,
)
from ..space import WidthSpace

# Per-point BN statistics: one ``(mean, var)`` pair per BN layer, in ``SlimmableNet.bn_layers`` order,
# each of the layer's channel count at that point's config.
BNStats = list[tuple[torch.Tensor, torch.Tensor]]


def _sdpa_flops(query: Any, key: Any, value: Any, *_args: Any, **_kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))


def _native_attention_flops(
    query: Any,
    key: Any,
    _value: Any,
    _embed: int,
    _heads: int,
    qkv: Any,
    _b: Any,
    proj: Any,
    *_a: Any,
    **_k: Any,
) -> int:
    # [B, L, E] queries, [B, S, E] keys: q from L tokens, k and v from S, both attention matmuls, out.
    (batch, queries, _), keys = query[:3], key[-2]
    inner = qkv[0] // 3
    projections = batch * (queries + 2 * keys) * qkv[1] * inner + batch * queries * proj[0] * proj[1]
    return 2 * projections + 4 * batch * queries * keys * inner


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter (no display), also counting the attention kernels it leaves out on a CPU:
    ``scaled_dot_product_attention``'s flash kernel and ``nn.MultiheadAttention``'s fused fast path,
    each as the matmuls it runs (two per head, as the unfused path counts them)."""
    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
            aten._native_multi_head_attention: _native_attention_flops,
        },
    )


class BNStatsError(ValueError):
    """BN statistics that do not fit the model at the config they are meant for; ``what`` says which tensor."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"bn_stats: {what}; pass one (mean, var) pair per BN layer, of this config's sizes")


@dataclass(frozen=True)
class Slot:
    """A channel count a layer reads: a width dimension or a constant."""

    kind: str  # "dim" or "fixed"
    index: int
    full: int


class LayerBuilder:
    """Creates slimmable layers at full width and records which slots they read.

    Width dimensions get slots ``0..D-1`` of the context, constants follow, and a last slot holds
    1 for the cost model; the binding is done once the whole network is built.
    """

    def __init__(self) -> None:
        self.dim_names: list[str] = []
        self.dim_full: list[int] = []
        self.dim_steps: list[int] = []
        self.fixed_values: list[int] = []
        self.bindings: list[tuple[_Slim, Slot | tuple[Slot, ...], Slot | tuple[Slot, ...]]] = []

    def dim(self, name: str, full: int, step: int = 1) -> Slot:
        """A new width dimension whose full channel count is ``full``, its counts multiples of ``step``."""
        self.dim_names.append(name)
        self.dim_full.append(int(full))
        self.dim_steps.append(int(step))
        return Slot("dim", len(self.dim_names) - 1, int(full))

    def fixed(self, n: int) -> Slot:
        """A channel count that no config changes (input channels, classes, SE squeeze)."""
        self.fixed_values.append(int(n))
        return Slot("fixed", len(self.fixed_values) - 1, int(n))

    def conv(
        self, cin: Slot, cout: Slot, kernel: int, stride: int = 1, depthwise: bool = False, bias: bool = False
    ) -> SlimConv2d:
        """A slimmable conv with 'same' padding (torchvision's (k-1)//2)."""
        if depthwise and cin != cout:
            raise ValueError("a depthwise conv reads and writes the same slot")
        layer = SlimConv2d(
            cin.full,
            cout.full,
            kernel,
            stride,
            (kernel - 1) // 2,
            groups=cout.full if depthwise else 1,
            bias=bias,
        )
        self.bindings.append((layer, cin, cout))
        return layer

    def bn(self, c: Slot, eps: float = 1e-5, momentum: float = 0.1) -> SlimBatchNorm2d:
        """A slimmable BatchNorm over slot ``c``."""
        layer = SlimBatchNorm2d(c.full, eps=eps, momentum=momentum)
        self.bindings.append((layer, c, c))
        return layer

    def linear(self, cin: Slot, cout: Slot, bias: bool = True) -> SlimLinear:
        """A slimmable fully connected layer."""
        layer = SlimLinear(cin.full, cout.full, bias=bias)
        self.bindings.append((layer, cin, cout))
        return layer

    def bind(self, module: _Slim, cin: Slot | Sequence[Slot], cout: Slot | Sequence[Slot]) -> None:
        """Register another slot-reading module (e.g. a parameter-free shortcut). A side given as several
        slots reads a concatenation: the blocks of those slots' channels, laid end to end."""
        self.bindings.append(
            (module, *(side if isinstance(side, Slot) else tuple(side) for side in (cin, cout)))  # type: ignore[arg-type]
        )


def _zeros_of_tensors(leaf: Any) -> Any:
    """Zeros like ``leaf`` when it is a tensor; any other argument (a flag, a scale) as it is."""
    return torch.zeros_like(leaf) if isinstance(leaf, torch.Tensor) else leaf


class SlimmableNet(nn.Module):
    """A network whose per-group widths can be changed in place.

    Subclasses build their layers through a :class:`LayerBuilder` and call :meth:`_finish`.
    ``set_widths(alpha)`` activates a config by writing integers into the shared context;
    ``with config(alpha, bn_stats, train):`` runs code at a config and restores the previous one;
    ``macs(alpha)`` / ``params(alpha)`` are exact analytic counts for the model's input size
    (multiply-accumulates of convs, linears and attention matmuls, as :func:`flop_counter` counts them / 2;
    trainable parameters of the sliced model). ``input_sizes``: the shape of each input without the
    batch (``[C, H, W]`` images, ``[C, L]`` sequences); ``input_size`` is the first.
    """

    arch: str = ""
    # The architecture's class of plain layers, whose forward slicing traces into a torch-only graph.
    plain_class: type[nn.Module]
    # Non-module attributes the plain class's forward reads, set on the plain copy that slicing traces.
    plain_attributes: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.arch_kwargs: dict[str, Any] = {}

    def _finish(
        self,
        builder: LayerBuilder,
        low: float,
        divisor: int | None,
        input_size: Sequence[int],
        lows: tuple[float, ...] | None = None,
        input_sizes: Sequence[Sequence[int]] | None = None,
        example: Any = None,
        op_macs: Sequence[tuple[int, Slot]] = (),
        input_dtypes: Sequence[str] | None = None,
    ) -> None:
        """Bind the layers to one context and build the cost model from one pass of zeros.

        ``input_sizes``: every input's shape when the network takes several (``input_size`` is the
        first); ``input_dtypes``: each input's dtype name (:data:`~pareco_runtime.inputs.DTYPES`;
        default float32), e.g. ``int64`` token ids; ``example``: the arguments the network is called
        with when they are not batched tensors of those shapes (a detector's list of images), used as
        zeros of their shapes.
        ``op_macs``: MACs of ops that are no layer, per channel of a slot (the attention matmuls of
        whole heads: their count per channel of the heads' slot).
        """
        d = len(builder.dim_names)
        # Steps only where one is above 1: spaces without them keep the form older versions read.
        steps = tuple(builder.dim_steps) if any(s > 1 for s in builder.dim_steps) else None
        self.space = WidthSpace(
            tuple(builder.dim_names), tuple(builder.dim_full), low, 1.0, divisor, lows, steps
        )
        self.input_size = tuple(int(v) for v in input_size)
        self.input_sizes = tuple(tuple(int(v) for v in s) for s in (input_sizes or [self.input_size]))
        self.input_dtypes = tuple(input_dtypes or [FLOAT] * len(self.input_sizes))
        self._example = None if example is None else tree_map(_zeros_of_tensors, example)
        ch = list(builder.dim_full) + list(builder.fixed_values) + [1]
        self.ctx = SlimContext(ch)
        self._one = len(ch) - 1

        def index(slot: Slot) -> int:
            return slot.index if slot.kind == "dim" else d + slot.index

        def parts(side: Slot | tuple[Slot, ...]) -> tuple[tuple[int, int], ...]:
            if isinstance(side, Slot):
                return ()
            offsets = itertools.accumulate((s.full for s in side), initial=0)
            return tuple((off, index(s)) for off, s in zip(offsets, side))

        def first(side: Slot | tuple[Slot, ...]) -> int:
            return index(side if isinstance(side, Slot) else side[0])

        for module, cin, cout in builder.bindings:
            module.bind(self.ctx, first(cin), first(cout), parts(cin), parts(cout))
        self._bn_layers = tuple((n, m) for n, m in self.named_modules() if isinstance(m, SlimBatchNorm2d))
        for i, (_, bn) in enumerate(self._bn_layers):
            bn.bn_index = i
        self._build_cost_terms([(coef, index(slot)) for coef, slot in op_macs])
        self.alpha = self.space.uniform(1.0)

    def plain_values(self) -> dict[str, Any]:
        """The attributes of :attr:`plain_attributes` by name, as the plain class's ``forward`` reads them."""
        return {name: getattr(self, name) for name in self.plain_attributes}

    @property
    def takes_batches(self) -> bool:
        """Whether ``forward`` takes a batch of each of :attr:`input_specs`: every network but one
        converted in parts (``make_slimmable(..., submodules=...)``), whose forward takes what the
        original's takes (a detector's list of images of any number and size)."""
        return self._example is None

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """Each positional input's shape and dtype (integer ids bounded by the embedding tables)."""
        return tuple(InputSpec.of(s, d, self) for s, d in zip(self.input_sizes, self.input_dtypes))

    def example_inputs(self, batch: int = 1, generator: torch.Generator | None = None) -> tuple[Any, ...]:
        """The positional arguments of one forward pass: a ``batch`` of each input
        (:meth:`InputSpec.batch <pareco_runtime.inputs.InputSpec.batch>`: standard normal, or ids, from
        ``generator``; zeros without one). A network converted with an example that is not batched
        tensors (a detector's list of images) gets that example's structure and shapes."""
        if self._example is not None:
            return tuple(
                tree_map(
                    lambda t: (
                        torch.randn(t.shape, generator=generator)
                        if generator is not None and isinstance(t, torch.Tensor) and t.is_floating_point()
                        else t
                    ),
                    self._example,
                )
            )
        return tuple(spec.batch(batch, generator) for spec in self.input_specs)

    def _build_cost_terms(self, op_macs: Sequence[tuple[int, int]] = ()) -> None:
        # Output positions per sample of every conv and linear (L, H*W, or a linear's tokens), the query
        # and key tokens of every attention, and torch's own FLOP count, from one pass.
        positions: dict[nn.Module, int] = {}
        tokens: dict[nn.Module, tuple[int, int]] = {}

        def record(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            positions[module] = (
                out.numel() // out.shape[1 if isinstance(module, (nn.Conv1d, nn.Conv2d)) else -1]
            )

        def record_tokens(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any
        ) -> None:
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs["key"]
            axis = 1 if module.batch_first else 0
            tokens[module] = (query.shape[axis], key.shape[axis])

        dense = [m for m in self.modules() if isinstance(m, (*SLIM_CONVS, SlimLinear))]
        hooks = [m.register_forward_hook(record) for m in dense]
        hooks += [
            m.register_forward_hook(record_tokens, with_kwargs=True)
            for m in self.modules()
            if isinstance(m, SlimMultiheadAttention)
        ]
        was_training = self.training
        self.eval()
        with torch.no_grad(), flop_counter() as counter:
            self(*self.example_inputs())
        self.train(was_training)
        for h in hooks:
            h.remove()

        macs: dict[tuple[int, int], int] = {}
        params: dict[tuple[int, int], int] = {}

        def add(table: dict[tuple[int, int], int], a: int, b: int, coef: int) -> None:
            table[(a, b)] = table.get((a, b), 0) + coef

        one = self._one
        slim_params: set[int] = set()
        for coef, slot in op_macs:
            add(macs, slot, one, coef)
        for m in self.modules():
            if isinstance(m, SlimMultiheadAttention):
                slim_params.update(id(p) for p in m.parameters())
                for coef, a, b in m.macs_terms(*tokens[m], one):
                    add(macs, a, b, coef)
                for coef, a, b in m.params_terms(one):
                    add(params, a, b, coef)
                continue
            if isinstance(m, SlimChannelParameters):
                # Only the per-channel parameters follow the width; the module's others are constant.
                per_channel = [p for n, p in m.named_parameters(recurse=False) if n in m.channel_dims]
                slim_params.update(id(p) for p in per_channel)
                for _, o in m.out_parts:
                    add(params, o, one, len(per_channel))
                continue
            if not isinstance(m, (*SLIM_CONVS, SlimLinear, SlimBatchNorm2d, SlimLayerNorm)):
                continue
            slim_params.update(id(p) for p in m.parameters(recurse=False))
            # A side reading a concatenation counts each of its parts: one term per pair of parts.
            outs = [s for _, s in m.out_parts]
            if isinstance(m, (SlimBatchNorm2d, SlimLayerNorm)):
                # Normalisers: an affine pair per channel, no MACs (torch's flop counter counts none).
                affine = sum(1 for _ in m.parameters(recurse=False))
                for o in outs:
                    if affine:
                        add(params, o, one, affine)
                continue
            # A grouped conv's output channel reads its group's input channels: a constant count.
            grouped = isinstance(m, SLIM_CONVS) and m.grouped
            # A Linear reading a flattened map reads in_span features per input channel.
            kk = (
                math.prod(m.kernel_size) * (m.group_width if grouped else 1)
                if isinstance(m, SLIM_CONVS)
                else m.in_span
            )
            for o in outs:
                for i in [one] if grouped else [s for _, s in m.in_parts]:
                    add(macs, o, i, positions[m] * kk)
                    add(params, o, i, kk)
                if m.bias is not None:
                    add(params, o, one, 1)
        # Whatever else torch counts (layers a converted network leaves plain, such as grouped convs of
        # more output than input channels, or a detector's untraced rest) costs the same in every config: one constant term, torch's count
        # at full width less the slimmable layers' (none in the zoo).
        full = self.ctx.ch
        fixed_macs = counter.get_total_flops() // 2 - sum(c * full[a] * full[b] for (a, b), c in macs.items())
        if fixed_macs < 0:
            raise ValueError(
                f"{type(self).__name__}: torch counts fewer MACs than its slimmable layers hold; a layer "
                "runs other than as make_slimmable traced it"
            )
        fixed_params = sum(p.numel() for p in self.parameters() if id(p) not in slim_params)
        if fixed_macs:
            add(macs, one, one, fixed_macs)
        if fixed_params:
            add(params, one, one, fixed_params)
        self._macs_terms = [(c, a, b) for (a, b), c in macs.items()]
        self._params_terms = [(c, a, b) for (a, b), c in params.items()]

    @property
    def bn_layers(self) -> tuple[tuple[str, SlimBatchNorm2d], ...]:
        """``(module name, layer)`` of every slimmable BN layer, in module order (= ``bn_index`` order).

        The order of every per-point statistics list (:data:`BNStats`).
        """
        return self._bn_layers

    @property
    def bn_names(self) -> list[str]:
        """Module names of the BN layers, in :attr:`bn_layers` order."""
        return [name for name, _ in self._bn_layers]

    @property
    def macs_terms(self) -> list[tuple[int, int, int]]:
        """The MAC model as ``(coef, a, b)`` terms: MACs = sum of ``coef * v[a] * v[b]`` over slot values ``v``.

        ``v`` is ``ctx.ch``: the channel count of each width dimension (slots ``0..dims-1``), then the
        constant slots (input channels, classes, fixed widths) and a final 1.
        """
        return list(self._macs_terms)

    def _slot_values(self, alpha: Sequence[float] | None) -> list[int]:
        if alpha is None:
            return self.ctx.ch
        self.space.validate(alpha)
        d = self.space.dims
        return self.space.channels(alpha) + self.ctx.ch[d:]

    def macs(self, alpha: Sequence[float] | None = None) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (current config when ``alpha`` is None)."""
        v = self._slot_values(alpha)
        return sum(c * v[a] * v[b] for c, a, b in self._macs_terms)

    def params(self, alpha: Sequence[float] | None = None) -> int:
        """Trainable parameters of the sub-network (current config when ``alpha`` is None)."""
        v = self._slot_values(alpha)
        return sum(c * v[a] * v[b] for c, a, b in self._params_terms)

    def channels(self, alpha: Sequence[float] | None = None) -> list[int]:
        """Channel count of each width group (current config when ``alpha`` is None)."""
        return list(self._slot_values(alpha)[: self.space.dims])

    def torchvision_config(self, width_mult: float) -> list[float]:
        """The config that is torchvision's network of this architecture at ``width_mult``.

        Only architectures whose torchvision ``width_mult`` networks are configs of their space offer
        it; the others raise ``ValueError`` saying so.
        """
        raise ValueError(
            f"{self.arch or type(self).__name__}: no torchvision width_mult networks in this width space; "
            "use --width or --alpha (mobilenet_v2 has them)"
        )

    def set_widths(self, alpha: Sequence[float]) -> None:
        """Activate config ``alpha`` in place: validates it, then rewrites the context's slots.

        Allocates no tensor. Not synchronised: :class:`SlimmableRuntime` adds the locking that
        concurrent inference needs.
        """
        self.space.validate(alpha)
        d = self.space.dims
        self.ctx.ch[:d] = self.space.channels(alpha)
        self.alpha = [float(a) for a in alpha]

    def activate(
        self,
        channels: Sequence[int],
        alpha: list[float],
        bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> None:
        """Activate precomputed ``channels`` (from ``space.channels(alpha)``) and per-point BN statistics.

        The runtime's switch: no validation, no allocation (integers copied into the context, the
        statistics list swapped by reference).
        """
        self.ctx.ch[: self.space.dims] = channels
        self.ctx.bn_stats = bn_stats
        self.alpha = alpha

    def check_bn_stats(self, bn_stats: BNStats, alpha: Sequence[float] | None = None) -> None:
        """Raise :class:`BNStatsError` naming the first misfit unless ``bn_stats`` holds one pair per BN
        layer, each tensor of shape ``(channels,)`` at config ``alpha`` (the active one when None) and of
        the layer's own dtype (its running buffers'), which eval-mode batch norm requires."""
        v = self._slot_values(alpha)
        if len(bn_stats) != len(self._bn_layers):
            raise BNStatsError(f"{len(bn_stats)} (mean, var) pairs for {len(self._bn_layers)} BN layers")
        for (name, bn), pair in zip(self._bn_layers, bn_stats):
            k = width(bn.out_parts, v)
            for tensor_name, t in zip(("running_mean", "running_var"), pair):
                if tuple(t.shape) != (k,):
                    raise BNStatsError(f"{name}.{tensor_name} has shape {tuple(t.shape)}, expected ({k},)")
                if t.dtype != bn.running_mean.dtype:
                    raise BNStatsError(
                        f"{name}.{tensor_name} has dtype {t.dtype}, expected {bn.running_mean.dtype}"
                    )

    def current_bn_stats(self) -> BNStats:
        """Copies of the statistics eval mode uses at the active widths, as :meth:`config` takes them."""
        return [(mean.clone(), var.clone()) for mean, var in (bn.eval_stats() for _, bn in self._bn_layers)]

    @contextmanager
    def config(
        self, alpha: Sequence[float] | None = None, bn_stats: BNStats | None = None, train: bool = False
    ) -> Iterator[None]:
        """Run the body at config ``alpha`` (the active widths when None), then put the model back exactly.

        ``bn_stats`` (checked with :meth:`check_bn_stats`) become the statistics eval mode uses, held by
        reference as :meth:`activate` holds them; None means the running buffers. Every module is in
        train mode when ``train`` is True, else in eval mode. On exit, also when the body raises, the
        previous widths, per-point statistics and per-module modes come back. With ``train`` True the
        running buffers and ``num_batches_tracked`` of the BN layers that track them are copied on entry
        and written back on exit (train-mode forwards update them in place); without it nothing is
        copied, so entering allocates no tensor.
        """
        v = self._slot_values(alpha)
        if bn_stats is not None:
            self.check_bn_stats(bn_stats, alpha)
        d = self.space.dims
        saved_ch, saved_alpha, saved_stats = self.ctx.ch[:d], self.alpha, self.ctx.bn_stats
        modules = list(self.modules())
        saved_modes = [m.training for m in modules]
        saved_buffers = [
            (t, t.clone())
            for _, bn in self._bn_layers
            if train and bn.track_running_stats
            for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)
            if t is not None
        ]
        try:
            self.activate(v[:d], self.alpha if alpha is None else [float(a) for a in alpha], bn_stats)
            self.train(train)
            yield
        finally:
            self.activate(saved_ch, saved_alpha, saved_stats)
            for m, mode in zip(modules, saved_modes):
                m.training = mode
            with torch.no_grad():
                for live, copy in saved_buffers:
                    live.copy_(copy)

    def describe(self) -> dict[str, Any]:
        """Architecture name and constructor arguments: enough for :func:`build_model` to rebuild it."""
        return {"arch": self.arch, "kwargs": dict(self.arch_kwargs)}
