"""Any traceable CNN becomes slimmable: channel groups derived from its ``torch.fx`` graph.

:func:`make_slimmable` traces a module, propagates the shapes of an example input, and unites the
channel dimensions that must keep one width: the operands of an add or a mul (residuals,
squeeze-excitation gates), a depthwise conv's input and output, everything a BatchNorm, an
activation, a pooling or a flatten of a 1x1 map passes through. Channels lie in dimension 1 unless a
permute moves them (ConvNeXt's channels-last blocks): a Linear on the channel axis, a LayerNorm over
it and a module's per-channel parameters (a layer scale) follow them. Each group that a conv or linear
layer produces becomes one width dimension; the input's channels, the network's outputs, and
whatever an unsupported op touches stay at full width. Conv2d, BatchNorm2d, Linear and LayerNorm
layers are then swapped for the slimmable ops of :mod:`pareco_runtime.ops`, reading one
:class:`~pareco_runtime.ops.SlimContext`, and the result is a :class:`SlimmableNet` whose
``forward`` is the original class's own: at full width its ``state_dict`` keys, shapes and outputs
are the original's.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import inspect
import itertools
import math
import operator
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import _pytree as pytree

from .models.base import LayerBuilder, SlimmableNet, Slot
from .ops import (
    SlimBatchNorm1d,
    SlimBatchNorm2d,
    SlimBatchNormAct2d,
    SlimChannelParameters,
    SlimConv1d,
    SlimConv2d,
    SlimLayerNorm,
    SlimLinear,
    channel_parameters_class,
)
from .sources import ModelFactory, check_builder_kwargs, original_module
from .untrusted import first_line

# Modules and functions that keep every channel where it is. The pointwise ones act per element, so the
# channels may lie on any axis; the spatial ones (pooling, padding, resizing) take dimension 1 for channels.
_POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
)
_SPATIAL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Dropout2d,
    nn.Dropout1d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    # Upsampling resizes each channel on its own (nn.Upsample's subclasses included).
    nn.Upsample,
)
_PASS_MODULES = _POINTWISE_MODULES + _SPATIAL_MODULES
_POINTWISE_FUNCTIONS: set[Any] = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.softplus,
    F.sigmoid,
    F.tanh,
    F.dropout,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.relu_,
    torch.clamp,
    torch.clip,
}
_SPATIAL_FUNCTIONS: set[Any] = {
    F.dropout2d,
    F.dropout1d,
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.interpolate,
    F.upsample,
    F.pad,
}
_PASS_FUNCTIONS = _POINTWISE_FUNCTIONS | _SPATIAL_FUNCTIONS
# What make_slimmable records under architecture.kwargs.convert, and all a manifest may pass it back.
CONVERT_SETTINGS = frozenset(
    {"input_size", "input_sizes", "low", "lows", "divisor", "pin", "tie", "on_unsupported"}
)
# The layers make_slimmable slims, by the exact class (a subclass may run another forward).
_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d)
_BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "clamp",
    "clamp_",
    "clip",
    "contiguous",
    "clone",
    "float",
    "to",
    "detach",
}
_ELEMENTWISE_FUNCTIONS: set[Any] = {
    operator.add,
    operator.mul,
    operator.sub,
    operator.truediv,
    operator.iadd,
    operator.imul,
    torch.add,
    torch.mul,
    torch.sub,
    torch.div,
}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_REDUCE_FUNCTIONS: set[Any] = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_CAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat, torch.concatenate}
_PERMUTE_METHODS = {"permute", "transpose", "swapaxes"}
_PERMUTE_FUNCTIONS: set[Any] = {torch.permute, torch.transpose, torch.swapaxes}


def _is_bn_act(mod: nn.Module) -> bool:
    """timm's fused BatchNorm + activation, whose ``drop`` and ``act`` act per element.

    Matched by its exact class: a BatchNorm2d subclass of unknown ``forward`` is traced through
    instead (its ``F.batch_norm`` then pins the channels around it).
    """
    kind = type(mod)
    return (
        kind.__module__ == "timm.layers.norm_act"
        and kind.__name__ == "BatchNormAct2d"
        and not any(True for _ in mod.drop.parameters())  # type: ignore[union-attr]
        and not any(True for _ in mod.act.parameters())  # type: ignore[union-attr]
    )


def _is_timm_linear(mod: nn.Module) -> bool:
    """timm's ``Linear``: an ``nn.Linear`` whose forward differs only under TorchScript."""
    return type(mod).__module__ == "timm.layers.linear" and type(mod).__name__ == "Linear"


# LayerNorm classes whose forward is nn.LayerNorm's state normalising one axis, by (module, name): whether
# that axis is dimension 1 of [N, C, H, W] (permuted to the last and back), else the last axis.
_LAYER_NORMS = {
    ("torch.nn.modules.normalization", "LayerNorm"): False,
    ("timm.layers.norm", "LayerNorm"): False,
    ("timm.layers.norm", "LayerNorm2d"): True,
    ("torchvision.models.convnext", "LayerNorm2d"): True,
}


def _layer_norm_axis(mod: nn.Module) -> bool | None:
    """Whether ``mod`` is a LayerNorm make_slimmable slims over channels on dimension 1 (True) or on the
    last axis (False); None for any other module. Matched by the exact class, over one axis only, and
    timm's without its fast-norm path (another kernel)."""
    kind = _LAYER_NORMS.get((type(mod).__module__, type(mod).__name__))
    if kind is None or not isinstance(mod, nn.LayerNorm) or len(mod.normalized_shape) != 1:
        return None
    return None if getattr(mod, "_fast_norm", False) else kind


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping the timm and torchvision layers :func:`make_slimmable` slims as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            _is_bn_act(m)
            or _is_timm_linear(m)
            or _layer_norm_axis(m) is not None
            or super().is_leaf_module(m, module_qualified_name)
        )


class ConversionError(ValueError):
    """A model :func:`make_slimmable` cannot convert; the message names the node and the way out.

    ``cli`` is the same message for a command line that took the model from ``pareco train``'s
    flags (``--pin``, ``--group-low``) where the way out is said in those flags, else None."""

    def __init__(self, message: str, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli


@dataclass
class _Groups:
    """Union-find over channel variables, with each root's channel count and pin reasons."""

    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    pinned: dict[int, str] = field(default_factory=dict)

    def new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(channels))
        return len(self.parent) - 1

    def find(self, v: int) -> int:
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            keep, drop = min(ra, rb), max(ra, rb)
            self.parent[drop] = keep
            if drop in self.pinned:
                self.pinned.setdefault(keep, self.pinned.pop(drop))
        return self.find(a)

    def pin(self, v: int, reason: str) -> None:
        self.pinned.setdefault(self.find(v), reason)

    def is_pinned(self, v: int) -> bool:
        return self.find(v) in self.pinned


@dataclass
class _Layer:
    """A layer to slim and the channel variables of its input and output, one per concatenated block."""

    name: str
    module: nn.Module
    cin: tuple[int, ...]
    cout: tuple[int, ...]


# What a SlimmableNet made by make_slimmable sets on itself: an original attribute of one of these
# names, or of a class member of TracedSlimmableNet, would hide that member or be overwritten.
_INSTANCE_API = frozenset(
    {
        "arch",
        "arch_kwargs",
        "space",
        "input_size",
        "input_sizes",
        "ctx",
        "alpha",
        "pinned",
        "plain_attributes",
        "_example",
        "_one",
        "_bn_layers",
        "_macs_terms",
        "_params_terms",
        "_own",
    }
)


class TracedSlimmableNet(SlimmableNet):
    """A :class:`SlimmableNet` made by :func:`make_slimmable`; ``forward`` is the original class's.

    ``plain_class`` is the original class: slicing traces its ``forward`` on plain layers into a
    standalone graph of torch layers; ``plain_attributes`` are the original module's own non-module
    attributes that its ``forward`` may read, set on the plain copy that is traced. ``pinned`` maps each
    layer whose output channels stay at full width to the reason (the network's output, an op named in
    a warning, a ``pin`` pattern).

    The original's own attributes never hide or overwrite this class's members (timm's DLA has a list
    ``channels``, torchvision's MNASNet a float ``alpha``): such attributes live on a plain instance of
    the original class that shares this one's layers, parameters and buffers, and the original
    ``forward`` runs on it (it then sees the attributes as they were when converted).
    """

    pinned: dict[str, str]
    # The original class's instance holding the attributes named like members of this class, else None.
    _own: nn.Module | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The original class's ``forward``."""
        own = self._own
        if own is None:
            return self.plain_class.forward(self, *args, **kwargs)
        own.training = self.training
        return self.plain_class.forward(own, *args, **kwargs)

    def plain_values(self) -> dict[str, Any]:
        """The original's attributes of :attr:`plain_attributes`, as the original ``forward`` sees them."""
        source = self if self._own is None else self._own
        return {name: getattr(source, name) for name in self.plain_attributes}


def _is_api(name: str) -> bool:
    """Whether an attribute ``name`` of an original module would hide or be overwritten by the API."""
    return name in _INSTANCE_API or (hasattr(TracedSlimmableNet, name) and not hasattr(nn.Module, name))


def _split_off_clashes(net: nn.Module, original: type[nn.Module]) -> nn.Module | None:
    """Move ``net``'s own attributes named like the SlimmableNet API onto a plain ``original`` sharing its
    module state, returned (None when there are none); refuse layers, parameters, buffers so named."""
    state = set(vars(nn.Module()))
    for kind in ("_modules", "_parameters", "_buffers"):
        named = next((k for k in getattr(net, kind) if _is_api(k)), None)
        if named is not None:
            raise ConversionError(
                f"make_slimmable: {type(net).__name__}.{named} is named like a member of SlimmableNet; "
                "rename it, or convert a submodule that holds it"
            )
    clashes = [k for k in vars(net) if k not in state and _is_api(k)]
    if not clashes:
        return None
    own = original.__new__(original)
    own.__dict__.update(vars(net))  # the same _modules, _parameters and _buffers dicts: one set of layers
    for k in clashes:
        del net.__dict__[k]
    return own


def _tensor_meta(node: torch.fx.Node) -> Any:
    return node.meta.get("tensor_meta")


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    meta = _tensor_meta(node)
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Analysis:
    """Walks the traced graph once and records each tensor's channel variable and each layer's pair."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        on_unsupported: str,
        groups: _Groups | None = None,
        layers: dict[str, _Layer] | None = None,
        unsupported: list[str] | None = None,
        part: str = "",
        root: nn.Module | None = None,
    ) -> None:
        # groups, layers and unsupported are shared by the parts of a partial conversion; ``part`` is the
        # traced submodule's name, which prefixes its layers' names. ``root`` is the module traced (the
        # graph module holds containers of its own on the paths to the tensors it reads).
        self.gm = gm
        self.root = gm if root is None else root
        self.groups = _Groups() if groups is None else groups
        # Each tensor's channels as the variables of its blocks: one, or a concatenation's, end to end.
        self.var: dict[torch.fx.Node, tuple[int, ...]] = {}
        # The dimension holding each tensor's channels: 1 unless a permute moved them (channels-last).
        self.axis: dict[torch.fx.Node, int] = {}
        # Per-channel parameters read by the ops of a module that is no layer (a layer scale): by that
        # module's name, each parameter's name -> (its channel dimension, its channel variable).
        self.channel_params: dict[str, dict[str, tuple[int, int]]] = {}
        self._param_vars: dict[int, int] = {}
        self._param_reads: set[torch.fx.Node] = set()
        self.layers: dict[str, _Layer] = {} if layers is None else layers
        self.unsupported: list[str] = [] if unsupported is None else unsupported
        self.on_unsupported = on_unsupported
        self.prefix = f"{part}." if part else ""
        for node in gm.graph.nodes:
            self._visit(node)
        self._pin_tensors_read_outside_their_layer()
        self._pin_channel_parameters_of_two_widths()

    def _pin_tensors_read_outside_their_layer(self) -> None:
        """A slimmed layer's parameter or buffer read by another op (``F.conv2d(x, self.conv.weight)``, a
        constant the trace made of a view of it) would be sliced, or copied, for the layer but not for
        that op: the layer keeps its channels on both sides."""
        owner = {
            tensor.untyped_storage().data_ptr(): layer
            for layer in self.layers.values()
            for tensor in itertools.chain(layer.module.parameters(), layer.module.buffers())
            if tensor.numel()
        }
        for node in self.gm.graph.nodes:
            if node.op != "get_attr":
                continue
            tensor = functools.reduce(getattr, str(node.target).split("."), self.gm)
            layer = (
                owner.get(tensor.untyped_storage().data_ptr()) if isinstance(tensor, torch.Tensor) else None
            )
            if layer is not None:
                text = f"{node.name} ({node.target}): an op reads a tensor of layer {layer.name} outside it"
                self._refuse_or_pin(text, [], layer)

    def _channel_var(self, node: Any) -> tuple[int, ...] | None:
        return self.var.get(node) if isinstance(node, torch.fx.Node) else None

    def _axis(self, node: Any) -> int:
        """The dimension of ``node``'s channels."""
        return self.axis.get(node, 1) if isinstance(node, torch.fx.Node) else 1

    def _fresh(self, node: torch.fx.Node, axis: int = 1) -> tuple[int, ...] | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        self.var[node] = (self.groups.new(shape[axis]),)
        self.axis[node] = axis % len(shape)
        return self.var[node]

    def _same(self, node: torch.fx.Node, source: Any, pointwise: bool = False) -> None:
        """``node``'s channels are ``source``'s, on the same axis: any axis for a ``pointwise`` op, else 1."""
        v = self._channel_var(source)
        out, inp = _shape(node), _shape(source)
        axis = self._axis(source)
        if not pointwise and axis != 1:
            self._unsupported(node, f"a spatial op on channels in dimension {axis}, not 1")
            return
        if v is None or out is None or inp is None or len(out) != len(inp) or out[axis] != inp[axis]:
            self._unsupported(node, "its output's channels do not follow its input's")
            return
        self.var[node] = v
        self.axis[node] = axis

    def _sizes(self, vars_: tuple[int, ...]) -> list[int]:
        return [self.groups.size[self.groups.find(v)] for v in vars_]

    def _couple(self, node: torch.fx.Node, operands: Sequence[tuple[int, ...]], what: str) -> None:
        """``node``'s channels are each operand's, block for block (an add, a concatenation along another
        dimension): unite the operands' blocks, or pin them when they are laid out differently."""
        first = operands[0]
        if any(self._sizes(v) != self._sizes(first) for v in operands[1:]):
            self._unsupported(node, f"{what} of tensors whose channels are concatenated differently")
            return
        for other in operands[1:]:
            for a, b in zip(first, other):
                self.groups.union(a, b)
        self.var[node] = first

    def _cat(self, node: torch.fx.Node) -> None:
        """Along channels: the output's blocks are the inputs' blocks laid end to end, each keeping its
        variable. Along another dimension every input has the output's channels: coupled block for block."""
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out = _shape(node)
        inputs = [self._channel_var(t) for t in tensors] if isinstance(tensors, (list, tuple)) else [None]
        axes = {self._axis(t) for t in tensors} if isinstance(tensors, (list, tuple)) else set()
        if out is None or len(out) < 2 or not isinstance(dim, int) or any(v is None for v in inputs):
            self._unsupported(node, "a concatenation of tensors without channels")
        elif len(axes) != 1:
            self._unsupported(node, "a concatenation of tensors whose channels lie in different dimensions")
        elif dim % len(out) == (axis := axes.pop()):
            self.var[node] = tuple(v for block in inputs for v in block)  # type: ignore[union-attr]
            self.axis[node] = axis
        else:
            self.axis[node] = axis
            self._couple(node, inputs, "a concatenation")  # type: ignore[arg-type]

    def _unsupported(self, node: torch.fx.Node, why: str, also: _Layer | None = None) -> None:
        where = (
            f"{self.prefix}{node.target}"
            if node.op == "call_module"
            else f"{node.op} {getattr(node.target, '__name__', node.target)}"
        )
        text = f"{node.name} ({where}): {why}"
        around = [self._channel_var(arg) or () for arg in node.all_input_nodes]
        self._refuse_or_pin(text, [v for vars_ in around for v in vars_], also)
        # Its output's channels, pinned, on its first input's channel axis where the ranks agree.
        rank = len(_shape(node) or ())
        first = next(
            (a for a in node.all_input_nodes if len(_shape(a) or ()) == rank and a in self.var), None
        )
        for v in self._fresh(node, self._axis(first)) or ():
            self.groups.pin(v, text)

    def _refuse_or_pin(self, text: str, channel_vars: Sequence[int], layer: _Layer | None = None) -> None:
        """Keep ``channel_vars`` (and ``layer``'s input and output channels) at full width for the reason
        ``text``, or refuse with it under ``on_unsupported='error'``."""
        if self.on_unsupported == "error":
            raise ConversionError(
                f"make_slimmable: {text}; pin the modules around it (pin=[...]) or pass "
                f"on_unsupported='pin' to keep them at full width",
                cli=f"{text}; keep the modules around it at full width with --pin PATTERNS",
            )
        self.unsupported.append(text)
        for v in [*channel_vars, *((*layer.cin, *layer.cout) if layer is not None else ())]:
            self.groups.pin(v, text)

    def _tensor_args(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        return [a for a in node.args if isinstance(a, torch.fx.Node) and _shape(a) is not None]

    def _visit(self, node: torch.fx.Node) -> None:
        if node.op == "get_attr" and self._attribute(node):
            return
        if node.op in ("placeholder", "get_attr"):
            for v in self._fresh(node) or ():
                self.groups.pin(
                    v, "the network's input" if node.op == "placeholder" else f"tensor {node.target}"
                )
        elif node.op == "output":
            for arg in node.all_input_nodes:
                for v in self._channel_var(arg) or ():
                    self.groups.pin(v, "the network's output")
        elif node.op == "call_module":
            self._visit_module(node, self.gm.get_submodule(str(node.target)))
        elif node.op in ("call_function", "call_method"):
            self._visit_function(node)

    def _visit_module(self, node: torch.fx.Node, mod: nn.Module) -> None:
        name = f"{self.prefix}{node.target}"
        src = node.args[0] if node.args else None
        cin = self._channel_var(src)
        batch_norm = type(mod) in _BATCH_NORMS or _is_bn_act(mod)
        linear = type(mod) is nn.Linear or _is_timm_linear(mod)
        conv = type(mod) in _CONVS
        layer_norm = _layer_norm_axis(mod)
        if (batch_norm or linear or conv or layer_norm is not None) and name in self.layers:
            # One module, one width: its first call's channels too, or that call is sliced and this one not.
            self._unsupported(node, "the module is called more than once", self.layers[name])
        elif (batch_norm or conv) and cin is not None and self._axis(src) != 1:
            self._unsupported(node, f"its input's channels lie in dimension {self._axis(src)}, not 1")
        elif layer_norm is not None:
            self._layer_norm(node, mod, name, layer_norm)
        elif conv and cin is not None and mod.padding_mode == "zeros":
            if mod.groups == 1:
                cout = self._fresh(node)
            elif mod.groups == mod.in_channels == mod.out_channels:
                cout = self.var[node] = cin
            else:
                self._unsupported(node, f"a grouped conv (groups={mod.groups}) keeps its channels")
                cout = self.var[node]
            self.layers[name] = _Layer(name, mod, cin, cout)  # type: ignore[arg-type]
        elif batch_norm and cin is not None and mod.affine and mod.track_running_stats:
            self._same(node, src)
            self.layers[name] = _Layer(name, mod, cin, cin)
        elif linear and cin is not None and self._axis(src) == len(_shape(src) or ()) - 1:
            # On the channel axis, last: [N, C] features, or [N, H, W, C] channels-last maps.
            cout = self._fresh(node, -1)
            self.layers[name] = _Layer(name, mod, cin, cout)  # type: ignore[arg-type]
        elif isinstance(mod, _PASS_MODULES):
            self._same(node, src, pointwise=isinstance(mod, _POINTWISE_MODULES))
        elif isinstance(mod, nn.Flatten):
            self._flatten(node, src, mod.start_dim)
        else:
            self._unsupported(node, f"{type(mod).__name__} is not a layer make_slimmable can slim")

    def _visit_function(self, node: torch.fx.Node) -> None:
        target = node.target
        method = node.op == "call_method"
        args = self._tensor_args(node)
        if _shape(node) is None:
            # Sizes, shapes and python values carry no channels; any other op of a tensor that
            # returns no single tensor (chunk, split, unbind) is one whose coupling is unknown.
            if args and not ((target in ("size", "dim", "numel")) if method else (target is getattr)):
                self._unsupported(node, "an op that splits or packs tensors")
            return
        if (target in _ELEMENTWISE_METHODS) if method else (target in _ELEMENTWISE_FUNCTIONS):
            self._elementwise(node, args)
        elif not method and target in _CAT_FUNCTIONS:
            self._cat(node)
        elif (
            (target in _PASS_METHODS)
            if method
            else (target in _PASS_FUNCTIONS or _is_stochastic_depth(target))
        ):
            # Methods and stochastic depth (whole samples) are pointwise.
            self._same(node, node.args[0], pointwise=method or target not in _SPATIAL_FUNCTIONS)
        elif (target in _PERMUTE_METHODS) if method else (target in _PERMUTE_FUNCTIONS):
            self._permute(node)
        elif (target == "flatten") if method else (target is torch.flatten):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            self._flatten(node, node.args[0], int(start))  # type: ignore[arg-type]
        elif (target in _REDUCE_METHODS) if method else (target in _REDUCE_FUNCTIONS):
            self._reduce(node)
        elif (target in ("view", "reshape")) if method else (target is torch.reshape):
            self._reshape(node)
        else:
            self._unsupported(node, "make_slimmable does not know how this op couples channels")

    def _elementwise(self, node: torch.fx.Node, args: list[torch.fx.Node]) -> None:
        """Operands broadcast from the right: those whose channels fill the output's channel axis are
        coupled; every other one must have size 1 there (a gate, a scalar) or not reach it."""
        out = _shape(node) or ()

        def placed(a: torch.fx.Node) -> int:  # ``a``'s channel axis, counted in the output's dimensions
            return self._axis(a) + len(out) - len(_shape(a) or ())

        carriers = [
            a
            for a in args
            if self._channel_var(a) is not None
            and 0 <= placed(a) < len(out)
            and (_shape(a) or ())[self._axis(a)] == out[placed(a)]
        ]
        # A one-channel operand (a spatial attention map) broadcasts when a wider one carries the channels.
        carriers = [a for a in carriers if out[placed(a)] != 1] or carriers
        axes = {placed(a) for a in carriers}
        if len(out) < 2 or len(axes) != 1:
            why = (
                "no operand carries the output's channels"
                if not axes
                else "operands' channels on different axes"
            )
            self._unsupported(node, why)
            return
        axis = axes.pop()
        for a in args:
            s = _shape(a) or ()
            at = axis - (len(out) - len(s))
            if a not in carriers and at >= 0 and s[at] != 1:
                self._unsupported(node, "operands whose channels differ")
                return
        self.axis[node] = axis
        self._couple(node, [self._channel_var(a) for a in carriers], "an elementwise op")  # type: ignore[misc]

    def _permute(self, node: torch.fx.Node) -> None:
        """A permute or transpose moves the channels to the dimension their axis goes to."""
        src = node.args[0]
        inp = _shape(src)
        given = list(node.args[1:]) or [
            node.kwargs.get(k) for k in ("dims", "dim0", "dim1") if k in node.kwargs
        ]
        listed = given[0] if len(given) == 1 and isinstance(given[0], (list, tuple)) else given
        dims = [d for d in listed if isinstance(d, int)]
        if self._channel_var(src) is None or inp is None or len(dims) != len(listed):
            self._unsupported(node, "a permute of a tensor without channels or by computed dimensions")
            return
        rank = len(inp)
        if node.target in ("permute", torch.permute):
            order = [d % rank for d in dims]
        else:  # transpose / swapaxes of two dimensions
            a, b = (d % rank for d in dims)
            order = list(range(rank))
            order[a], order[b] = b, a
        self.var[node] = self.var[src]  # type: ignore[index]
        self.axis[node] = order.index(self._axis(src))

    def _reshape(self, node: torch.fx.Node) -> None:
        """A reshape that keeps the channel dimension whole, as one dimension of the output after as many
        elements as before it, keeps the channels there (timm's ``gamma.reshape(1, -1, 1, 1)``, MaxViT's
        windows cut from the other dimensions), unless it names their count as a constant, which a narrower
        width would not fit; any other reshape is a flatten."""
        src = node.args[0]
        inp, out, v = _shape(src), _shape(node), self._channel_var(src)
        axis = self._axis(src)
        if v is None or inp is None or out is None or inp[axis] == 1:
            self._flatten(node, src, 1)
            return
        before = math.prod(inp[:axis])
        # Dimensions after the same number of elements differ only by dimensions of size 1: one has C.
        lands = [e for e in range(len(out)) if out[e] == inp[axis] and math.prod(out[:e]) == before]
        if not lands:
            self._flatten(node, src, 1)
            return
        sizes = node.args[1] if len(node.args) == 2 else node.args[1:]
        sizes = sizes if isinstance(sizes, (list, tuple)) else ()
        if len(sizes) == len(out) and isinstance(sizes[lands[0]], int) and sizes[lands[0]] != -1:
            self._unsupported(node, "a reshape to a constant number of channels")
            return
        self.var[node] = v
        self.axis[node] = lands[0]

    def _layer_norm(self, node: torch.fx.Node, mod: nn.Module, name: str, channels_first: bool) -> None:
        """A LayerNorm over the channel axis (dimension 1 for ``channels_first``, else the last) is a
        layer: it normalises the active channels."""
        src = node.args[0] if node.args else None
        cin, inp = self._channel_var(src), _shape(src)
        want = 1 if channels_first else len(inp or ()) - 1
        if cin is None or inp is None or self._axis(src) != want or (channels_first and len(inp) != 4):
            self._unsupported(node, "a LayerNorm over other than the channel axis")
            return
        self._same(node, src, pointwise=True)
        self.layers[name] = _Layer(name, mod, cin, cin)

    def _attribute(self, node: torch.fx.Node) -> bool:
        """A tensor the model holds with one dimension over 1 has its channels there (a layer scale ``[C]``
        or ``[C, 1, 1]``): a parameter of a module that can hold slimmed ones narrows with them, any other
        such tensor is pinned. Whether ``node`` reads such a tensor."""
        tensor = functools.reduce(getattr, str(node.target).split("."), self.gm)
        shape: tuple[int, ...] = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
        wide = [d for d, n in enumerate(shape) if n != 1]
        if len(wide) != 1:
            return False
        owner, _, attr = str(node.target).rpartition(".")
        module = self.root.get_submodule(owner) if owner else None
        self.axis[node] = wide[0]
        if (
            module is None
            or module._parameters.get(attr) is not tensor
            or not _can_hold_channel_parameters(module)
        ):
            self.var[node] = (self.groups.new(shape[wide[0]]),)
            self.groups.pin(self.var[node][0], f"tensor {node.target}")
            return True
        if id(tensor) not in self._param_vars:
            self._param_vars[id(tensor)] = self.groups.new(shape[wide[0]])
        v = self._param_vars[id(tensor)]
        self.channel_params.setdefault(f"{self.prefix}{owner}", {})[attr] = (wide[0], v)
        self.var[node] = (v,)
        self._param_reads.add(node)
        return True

    def _pin_channel_parameters_of_two_widths(self) -> None:
        """A module's per-channel parameters are sliced by one binding: those of a module whose parameters
        end in groups of different widths keep them all, as do those an op reads as another tensor."""
        read_elsewhere: set[int] = set()
        for n in self.gm.graph.nodes:
            tensor = (
                functools.reduce(getattr, str(n.target).split("."), self.gm) if n.op == "get_attr" else None
            )
            if isinstance(tensor, torch.Tensor) and n not in self._param_reads:
                read_elsewhere.add(tensor.untyped_storage().data_ptr())
        for owner, params in self.channel_params.items():
            module = self.root.get_submodule(owner.removeprefix(self.prefix))
            roots = {self.groups.find(v) for _, v in params.values()}
            tensors = (getattr(module, name) for name in params)
            shared = any(t.untyped_storage().data_ptr() in read_elsewhere for t in tensors)
            if len(roots) > 1 or shared:
                why = "different widths" if len(roots) > 1 else "a tensor also read as another"
                self._refuse_or_pin(
                    f"{owner}: per-channel parameters of {why}", [v for _, v in params.values()]
                )

    def _flatten(self, node: torch.fx.Node, src: Any, start_dim: int) -> None:
        inp, out = _shape(src), _shape(node)
        v = self._channel_var(src)
        spatial_one = inp is not None and all(d == 1 for d in inp[2:])
        if (
            v is not None
            and self._axis(src) == 1
            and inp is not None
            and out is not None
            and len(out) == 2
            and start_dim == 1
            and spatial_one
            and out[1] == inp[1]
        ):
            self.var[node] = v
        else:
            self._unsupported(node, "a reshape that mixes channels with other dimensions")

    def _reduce(self, node: torch.fx.Node) -> None:
        given = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = [given] if isinstance(given, int) else list(given) if isinstance(given, (list, tuple)) else []
        src, out = node.args[0], _shape(node)
        inp, axis = _shape(src), self._axis(src)
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if inp is None or out is None or not dims or not all(isinstance(d, int) for d in dims):
            self._unsupported(node, "a reduction over channels")
            return
        gone = {d % len(inp) for d in dims}
        # Over other dimensions than the batch's and the channels': the channels stay, on an axis that
        # moves down by the dimensions dropped before it.
        lands = axis if keep else axis - sum(1 for d in gone if d < axis)
        if gone & {0, axis} or self._channel_var(src) is None or len(out) <= lands or out[lands] != inp[axis]:
            self._unsupported(node, "a reduction over channels")
            return
        self.var[node] = self.var[src]  # type: ignore[index]
        self.axis[node] = lands


def _mixin_members() -> frozenset[str]:
    names = set(dir(SlimChannelParameters))
    for cls in SlimChannelParameters.__mro__:
        names.update(getattr(cls, "__annotations__", {}))
    module = {*dir(nn.Module), *vars(nn.Module())}
    return frozenset(n for n in names - module if not n.startswith("__"))


# What slimming a module's per-channel parameters adds to its class and instance.
_CHANNEL_PARAMETERS_MEMBERS = _mixin_members()


def _can_hold_channel_parameters(module: nn.Module) -> bool:
    """Whether ``module``'s per-channel parameters can be slimmed in place: a module of the model's own
    code (torch's read theirs inside their forward, layers are slimmed whole) none of whose members is
    named like what :class:`~pareco_runtime.ops.SlimChannelParameters` adds (a submodule ``key``)."""
    if type(module).__module__.startswith("torch.") or isinstance(
        module, (SlimChannelParameters, SlimmableNet)
    ):
        return False
    own = {*dir(type(module)), *vars(module), *module._modules, *module._parameters, *module._buffers}
    return not own & _CHANNEL_PARAMETERS_MEMBERS


def _is_stochastic_depth(target: Any) -> bool:
    # torchvision's residual drop scales whole samples, never single channels.
    return getattr(target, "__name__", "") == "stochastic_depth" and "torchvision" in getattr(
        target, "__module__", ""
    )


def _matching(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _slim_twin(mod: nn.Module) -> nn.Module:
    """The slimmable op replacing ``mod``, holding its parameters and buffers (same device and dtype)."""
    twin: nn.Module
    if isinstance(mod, _CONVS):
        twin = (SlimConv1d if isinstance(mod, nn.Conv1d) else SlimConv2d)(
            mod.in_channels,
            mod.out_channels,
            mod.kernel_size,
            mod.stride,
            mod.padding,
            mod.dilation,
            groups=mod.groups,
            bias=mod.bias is not None,
        )
    elif _is_bn_act(mod):
        twin = SlimBatchNormAct2d(
            mod.num_features,  # type: ignore[arg-type]
            copy.deepcopy(mod.drop),  # type: ignore[arg-type]
            copy.deepcopy(mod.act),  # type: ignore[arg-type]
            eps=mod.eps,
            momentum=mod.momentum,
        )
    elif isinstance(mod, _BATCH_NORMS):
        bn_type = SlimBatchNorm1d if isinstance(mod, nn.BatchNorm1d) else SlimBatchNorm2d
        twin = bn_type(mod.num_features, eps=mod.eps, momentum=mod.momentum)  # type: ignore[arg-type]
    elif isinstance(mod, nn.LayerNorm):
        twin = _slim_layer_norm(mod)
    else:
        twin = SlimLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)  # type: ignore[arg-type]
    reference = next(mod.parameters(), None)
    if reference is not None:
        twin = twin.to(device=reference.device, dtype=reference.dtype)
    twin.load_state_dict(mod.state_dict())
    twin.train(mod.training)
    return twin


def _slim_layer_norm(mod: nn.LayerNorm) -> SlimLayerNorm:
    """The :class:`~pareco_runtime.ops.SlimLayerNorm` of a LayerNorm class of ``_LAYER_NORMS``."""
    # The subclass's own attributes (timm's _fast_norm), which its plain twin carries again.
    plain_state = vars(nn.LayerNorm(1))
    return SlimLayerNorm(
        mod.normalized_shape[0],
        eps=mod.eps,
        elementwise_affine=mod.elementwise_affine,
        bias=mod.bias is not None,
        channels_first=bool(_layer_norm_axis(mod)),
        plain_type=type(mod),
        plain_attributes={k: v for k, v in vars(mod).items() if k not in plain_state},
    )


def _bind_channel_parameters(
    net: nn.Module,
    channel_params: Mapping[str, Mapping[str, tuple[int, int]]],
    groups: _Groups,
    slots: Mapping[int, Slot],
    builder: LayerBuilder,
) -> None:
    """Give each module whose per-channel parameters lie in a group of a width dimension the subclass of
    its class that reads their active slices, bound to that dimension's slot."""
    for owner, params in channel_params.items():
        slot = slots.get(groups.find(next(iter(params.values()))[1]))
        if slot is None or slot.kind != "dim":
            continue  # no config narrows these channels
        holder = net.get_submodule(owner)
        holder.__class__ = channel_parameters_class(type(holder), tuple(sorted(params)))
        assert isinstance(holder, SlimChannelParameters)
        holder.channel_dims = {name: dim for name, (dim, _) in params.items()}
        builder.bind(holder, slot, slot)


def make_slimmable(
    module: nn.Module,
    example_input: torch.Tensor | tuple[Any, ...],
    *,
    submodules: Sequence[str] = (),
    low: float = 0.25,
    lows: Mapping[str, float] | None = None,
    divisor: int | None = None,
    pin: Sequence[str] = (),
    tie: dict[str, Sequence[str]] | None = None,
    on_unsupported: str = "pin",
    arch: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> TracedSlimmableNet:
    """Convert a traceable CNN into a :class:`SlimmableNet` with one width dimension per channel group.

    ``module`` is left untouched (its layers are copied). ``example_input``: one batch-first tensor
    (``[N, C, H, W]`` images, ``[N, C, L]`` sequences) or a tuple of them, one per positional input;
    it sizes the cost model. Outputs may be tensors or tuples, lists and dicts of them (every output
    channel stays at full width). ``submodules``: convert only these traceable parts of ``module``
    (``["backbone", "head"]`` of a detector whose pre- and post-processing torch.fx cannot trace);
    ``example_input`` is then the tuple of arguments ``module`` is called with (a list of images), the
    parts are traced on what they receive from it, each part's inputs and outputs stay at full width,
    and the rest of ``module`` runs as it is, its MACs (torch's FLOP counter at full width) a constant
    of the cost model. ``pin``: module-name patterns (``fnmatch``) whose output channels stay full.
    ``tie``: ``{dimension name: [patterns]}`` joins the output groups of the matching layers into one
    dimension (e.g. every stage's inner convs). ``on_unsupported``: ``"pin"`` keeps channels that an
    op of unknown channel coupling touches at full width, with a warning naming it; ``"error"``
    refuses with :class:`ConversionError`. ``low`` / ``divisor`` shape the width space; ``lows``:
    ``{dimension-name pattern: lowest width}`` raises ``low`` for the matching dimensions (the first
    matching pattern wins), e.g. ``{"layer4.*": 0.5}`` where the last stage loses accuracy fast.
    ``arch`` / ``model_kwargs``: how the original module is rebuilt (``torchvision:NAME``,
    ``timm:NAME`` or ``pkg.module:factory`` called with ``model_kwargs``), recorded with these
    settings in :meth:`~SlimmableNet.describe` so that a manifest can rebuild the same network.

    At full width the result's ``state_dict`` has the original's keys and shapes and its outputs in
    eval mode equal the original's.
    """
    if on_unsupported not in ("pin", "error"):
        raise ValueError(f"on_unsupported must be 'pin' or 'error', got {on_unsupported!r}")
    if arch is not None:
        check_builder_kwargs(arch, model_kwargs or {}, where="model_kwargs")
    inputs = _example_args(example_input, partial=bool(submodules))
    net = copy.deepcopy(module)
    parts = _part_inputs(net, inputs, submodules) if submodules else {"": (net, inputs)}
    sizes = _input_sizes(inputs, bool(submodules))
    groups, layers, unsupported = _Groups(), dict[str, _Layer](), list[str]()
    channel_params: dict[str, dict[str, tuple[int, int]]] = {}
    for part, (part_module, args) in parts.items():
        gm = _traced(part_module, args, part or type(module).__name__)
        analysis = _Analysis(gm, on_unsupported, groups, layers, unsupported, part, part_module)
        channel_params.update(analysis.channel_params)
    _check_own_tensors(net, layers)
    for p in pin:
        if not _matching(layers, [p]):
            named_like = (
                f"matches no Conv2d/BatchNorm2d/Linear; layers are named like {next(iter(layers), '?')!r}"
            )
            raise ConversionError(
                f"make_slimmable: pin pattern {p!r} {named_like}", cli=f"--pin pattern {p!r} {named_like}"
            )
        for name in _matching(layers, [p]):
            for v in layers[name].cout:
                groups.pin(v, f"pinned by {p!r}")
    names: dict[int, str] = {}
    for dim_name, patterns in (tie or {}).items():
        matched = _matching(
            [
                n
                for n, la in layers.items()
                if not isinstance(la.module, (*_BATCH_NORMS, nn.LayerNorm)) and len(la.cout) == 1
            ],
            patterns,
        )
        if not matched:
            raise ConversionError(
                f"make_slimmable: tie {dim_name!r} matches no Conv2d/Linear ({', '.join(patterns)})"
            )
        widths = {groups.size[groups.find(layers[n].cout[0])] for n in matched}
        if len(widths) > 1:
            raise ConversionError(
                f"make_slimmable: tie {dim_name!r} joins groups of different widths "
                f"({sorted(widths)}); tie layers of one width only"
            )
        root = layers[matched[0]].cout[0]
        for n in matched[1:]:
            root = groups.union(root, layers[n].cout[0])
        names[groups.find(root)] = dim_name
    if unsupported:
        shown = "; ".join(unsupported[:3]) + (
            f"; and {len(unsupported) - 3} more" if len(unsupported) > 3 else ""
        )
        warnings.warn(
            f"make_slimmable: {len(unsupported)} op(s) keep the channels around them at full width "
            f"(see .pinned): {shown}",
            stacklevel=2,
        )

    builder = LayerBuilder()
    slots: dict[int, Slot] = {}
    for layer in layers.values():
        for v in (*layer.cin, *layer.cout):
            root = groups.find(v)
            if root in slots:
                continue
            if root in groups.pinned:
                slots[root] = builder.fixed(groups.size[root])
            else:
                slots[root] = builder.dim(names.get(root, layer.name), groups.size[root])
    if not builder.dim_names:
        raise ConversionError(
            f"make_slimmable: every channel group of {type(module).__name__} is pinned, nothing to slim "
            f"(first: {unsupported[0] if unsupported else 'pin patterns'}); slim a CNN built from "
            f"Conv2d/BatchNorm2d/Linear"
        )

    for layer in layers.values():
        # A side that reads a concatenation binds one slot per block.
        cin, cout = ([slots[groups.find(v)] for v in side] for side in (layer.cin, layer.cout))
        if isinstance(layer.module, _CONVS) and layer.module.groups not in (1, layer.module.out_channels):
            continue  # a grouped conv stays a plain nn.Conv2d at full width (both sides pinned)
        twin = _slim_twin(layer.module)
        parent, _, child = layer.name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, twin)
        builder.bind(twin, cin, cout)  # type: ignore[arg-type]
    _bind_channel_parameters(net, channel_params, groups, slots, builder)

    original = type(module)
    cls = type(
        f"Slimmable{original.__name__}",
        (TracedSlimmableNet, original),
        {"plain_class": original, "__module__": __name__},
    )
    own = tuple(k for k in vars(net) if not k.startswith("_") and k != "training")
    shadow = _split_off_clashes(net, original)
    net.__class__ = cls
    slim: TracedSlimmableNet = net  # type: ignore[assignment]
    # object.__setattr__: a module held here must not become a child (its layers are this one's).
    object.__setattr__(slim, "_own", shadow)
    slim.plain_attributes = own
    slim.arch = arch or f"custom:{original.__module__}.{original.__qualname__}"
    slim.arch_kwargs = {
        "model": dict(model_kwargs or {}),
        "convert": {
            "input_size": list(sizes[0]),
            "low": low,
            "divisor": divisor,
            "pin": list(pin),
            "tie": {k: list(v) for k, v in (tie or {}).items()},
            "on_unsupported": on_unsupported,
        },
    }
    # Recorded only when set, so conversions without them keep the form older versions rebuild.
    if lows:
        slim.arch_kwargs["convert"]["lows"] = {k: float(v) for k, v in lows.items()}
    if len(sizes) > 1:
        slim.arch_kwargs["convert"]["input_sizes"] = [list(size) for size in sizes]
    if submodules:
        # Not a setting rebuild() takes: a front needs batched tensor inputs (docs/own-model.md).
        slim.arch_kwargs["convert"]["submodules"] = list(submodules)
    slim.pinned = {
        layer.name: next(groups.pinned[groups.find(v)] for v in layer.cout if groups.is_pinned(v))
        for layer in layers.values()
        if any(groups.is_pinned(v) for v in layer.cout)
    }
    floors = _dimension_lows(builder.dim_names, low, lows or {})
    slim._finish(builder, low, divisor, sizes[0], floors, sizes, inputs if submodules else None)
    return slim


def _example_args(example_input: Any, partial: bool) -> tuple[Any, ...]:
    """``example_input`` as the tuple of positional arguments: batch-first tensors of at least two
    dimensions (``[N, C, ...]``), or, for a partial conversion, whatever ``module`` takes."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if partial:
        if not any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(args)):
            raise ConversionError(
                "make_slimmable: example_input holds no tensor; give the arguments the model takes"
            )
        return args
    if not args or not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in args):
        got = ", ".join(
            f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__ for t in args
        )
        raise ConversionError(
            f"make_slimmable: example_input must be a batch-first tensor [N, C, ...] or a tuple of them, got "
            f"{got or 'an empty tuple'}; e.g. torch.randn(1, 3, 224, 224), or submodules=[...] to convert "
            "the traceable parts of a model that takes other inputs"
        )
    return tuple(t[:1] for t in args)


def _input_sizes(inputs: tuple[Any, ...], partial: bool) -> list[tuple[int, ...]]:
    """Each input's shape without the batch (a partial conversion's example leaves: as given)."""
    leaves = [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    return [tuple(int(v) for v in (t.shape if partial else t.shape[1:])) for t in leaves]


def _part_inputs(
    net: nn.Module, inputs: tuple[Any, ...], submodules: Sequence[str]
) -> dict[str, tuple[nn.Module, tuple[Any, ...]]]:
    """Each named submodule of ``net`` and the positional arguments it receives when ``net`` runs ``inputs``
    (in eval mode, once)."""
    parts: dict[str, nn.Module] = {}
    for name in submodules:
        try:
            parts[name] = net.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in net.named_children())
            raise ConversionError(
                f"make_slimmable: submodule {name!r} is not in {type(net).__name__}; its children are {children}"
            ) from None
    seen: dict[str, tuple[Any, ...]] = {}

    def capture(name: str) -> Any:
        def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name in seen or kwargs:
                why = "is called more than once" if name in seen else "is called with keyword arguments"
                raise ConversionError(f"make_slimmable: submodule {name!r} {why}; convert a part called once")
            seen[name] = args

        return hook

    hooks = [mod.register_forward_pre_hook(capture(name), with_kwargs=True) for name, mod in parts.items()]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(*inputs)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(
            f"make_slimmable: {type(net).__name__} does not run on example_input ({first_line(exc)}); give "
            "the arguments the model takes"
        ) from None
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    missing = [name for name in parts if name not in seen]
    if missing:
        raise ConversionError(f"make_slimmable: submodule {missing[0]!r} does not run on example_input")
    return {name: (mod, seen[name]) for name, mod in parts.items()}


def _traced(module: nn.Module, args: tuple[Any, ...], what: str) -> torch.fx.GraphModule:
    """``module`` traced by torch.fx, each node's output shape propagated from ``args`` in eval mode.

    An argument that is a list, tuple or dict of tensors is traced as one placeholder per tensor, so
    that a forward iterating over it (a detection head's feature maps) traces."""
    params = list(inspect.signature(module.forward).parameters)
    concrete = {
        params[i]: pytree.tree_map(lambda _: torch.fx.PH, a)
        for i, a in enumerate(args)
        if not isinstance(a, torch.Tensor) and i < len(params)
    }
    try:
        gm = torch.fx.GraphModule(module, _Tracer().trace(module, concrete_args=concrete or None))
    except Exception as exc:
        raise ConversionError(
            f"make_slimmable: torch.fx cannot trace {what} ({first_line(exc)}); make its forward traceable "
            "(no control flow on tensor values) or convert its traceable parts with submodules=[...]"
        ) from None
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        shapes = [tuple(t.shape) for t in pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]
        raise ConversionError(
            f"make_slimmable: the example input {', '.join(map(str, shapes))} does not run through {what} "
            f"({first_line(exc)}); give an input of the size the model takes"
        ) from None
    finally:
        module.train(was_training)
    return gm


def _check_own_tensors(net: nn.Module, layers: Mapping[str, _Layer]) -> None:
    """Refuse layers that share a parameter or buffer (tied weights, one module under two names): each
    becomes a slimmable copy of its own, which would untie them, and no pin can keep them tied."""
    owner: dict[int, str] = {}
    named = net.named_parameters(remove_duplicate=False), net.named_buffers(remove_duplicate=False)
    for name, tensor in itertools.chain(*named):
        module = name.rpartition(".")[0]
        first = owner.setdefault(id(tensor), module)
        if first != module and (first in layers or module in layers):
            raise ConversionError(
                f"make_slimmable: layers {first!r} and {module!r} share one tensor ({name}); a slimmable "
                "copy of each would untie them; give each layer its own weights, or convert a submodule "
                "without the tie"
            )


def _dimension_lows(dims: Sequence[str], low: float, lows: Mapping[str, float]) -> tuple[float, ...] | None:
    """Each dimension's lowest width under the ``lows`` patterns (None when there are none)."""
    if not lows:
        return None
    # The range of each value is the width space's to check; here only what the patterns match.
    for pattern in lows:
        if not _matching(dims, [pattern]):
            named_like = f"matches no width dimension; dimensions are named like {dims[0]!r}"
            raise ConversionError(
                f"make_slimmable: lows pattern {pattern!r} {named_like}",
                cli=f"--group-low pattern {pattern!r} {named_like}",
            )
    return tuple(
        next((float(v) for p, v in lows.items() if fnmatch.fnmatchcase(name, p)), low) for name in dims
    )


def rebuild(arch: str, kwargs: dict[str, Any], factory: ModelFactory | None = None) -> TracedSlimmableNet:
    """The converted network that ``make_slimmable(..., arch=arch)`` described as ``kwargs``
    (``{"model": builder arguments, "convert": settings}``), rebuilt with random weights.

    The warnings of the first conversion are not repeated.
    """
    if set(kwargs) != {"model", "convert"}:
        raise ValueError(
            f"architecture '{arch}': kwargs must hold 'model' and 'convert' (what "
            f"make_slimmable records), got {sorted(kwargs)}"
        )
    settings = dict(kwargs["convert"])
    unknown = sorted(set(settings) - CONVERT_SETTINGS) or ([] if "input_size" in settings else ["input_size"])
    if unknown:
        raise ValueError(
            f"architecture.kwargs.convert.{unknown[0]}: make_slimmable records exactly "
            f"{', '.join(sorted(CONVERT_SETTINGS))}; use the manifest pareco wrote"
        )
    sizes = [settings.pop("input_size")]
    sizes = settings.pop("input_sizes", sizes)
    module = original_module(arch, dict(kwargs["model"]), factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            example = tuple(torch.zeros(1, *size) for size in sizes)
            return make_slimmable(
                module,
                example if len(example) > 1 else example[0],
                arch=arch,
                model_kwargs=kwargs["model"],
                **settings,
            )
        except TypeError as exc:  # a setting of the wrong type: the manifest was edited
            raise ValueError(f"architecture.kwargs.convert: {exc}; use the manifest pareco wrote") from None
