"""How each op of a traced network couples channels: the rule table :func:`make_slimmable` reads.

Every tensor of the traced graph carries *channel variables*, one per block of its channels (one,
or a concatenation's inputs laid end to end); a union-find (:class:`Groups`) unites the variables
that must keep one width and pins those that must stay at full width, with the reason. Each op's
rule says what the op does to them, and it is one entry of one of three tables:

- :data:`MODULE_RULES`, by module class (``nn.ReLU``), or by ``"package.module.Class"`` for a class
  of a package pareco does not import (timm's layers, traced as one call);
- :data:`FUNCTION_RULES`, by function (``F.relu``, ``operator.add``), or by its qualified name;
- :data:`METHOD_RULES`, by tensor method name (``"relu"``, ``"view"``).

A :class:`Rule`'s ``visit(analysis, node, target)`` records the node's output channels through the
:class:`Analysis` methods (``same``, ``fresh``, ``couple``, ``unsupported``). A layer with weights to
slim also names its slimmable ``twin`` (:mod:`pareco_runtime.ops`), which owns how it slices and how
its MACs count. An op without a rule keeps the channels around it at full width, saying which op.

Adding an op: one entry (reusing :data:`PASS` for an op that acts on each channel alone), and a test
that the converted network slices exactly and counts MACs as torch does (docs/own-model.md).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .ops import SlimBatchNorm1d, SlimBatchNorm2d, SlimBatchNormAct2d, SlimConv1d, SlimConv2d, SlimLinear

# A tensor's channels: the variable of each of its blocks, in order.
Vars = tuple[int, ...]


class ConversionError(ValueError):
    """A model :func:`make_slimmable` cannot convert; the message names the node and the way out.

    ``cli`` is the same message for a command line that took the model from ``pareco train``'s
    flags (``--pin``, ``--group-low``) where the way out is said in those flags, else None."""

    def __init__(self, message: str, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli


@dataclass
class Groups:
    """Union-find over channel variables, with each root's channel count, channel step (its widths are
    multiples of it: whole groups of a grouped conv) and pin reasons."""

    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    pinned: dict[int, str] = field(default_factory=dict)

    def new(self, channels: int) -> int:
        """A new variable of ``channels`` channels, in a group of its own."""
        self.parent.append(len(self.parent))
        self.size.append(int(channels))
        self.step.append(1)
        return len(self.parent) - 1

    def require_step(self, v: int, step: int) -> None:
        """Make ``v``'s group's channel counts multiples of ``step`` (and of the steps it had)."""
        root = self.find(v)
        self.step[root] = math.lcm(self.step[root], step)

    def find(self, v: int) -> int:
        """The root of ``v``'s group."""
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a: int, b: int) -> int:
        """Join the groups of ``a`` and ``b`` (pinned when either was); their root."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            keep, drop = min(ra, rb), max(ra, rb)
            self.parent[drop] = keep
            # Equal sizes, each a multiple of its step: the size is a multiple of their lcm too.
            self.step[keep] = math.lcm(self.step[keep], self.step[drop])
            if drop in self.pinned:
                self.pinned.setdefault(keep, self.pinned.pop(drop))
        return self.find(a)

    def pin(self, v: int, reason: str) -> None:
        """Keep ``v``'s group at full width (the first reason given is kept)."""
        self.pinned.setdefault(self.find(v), reason)

    def is_pinned(self, v: int) -> bool:
        """Whether ``v``'s group stays at full width."""
        return self.find(v) in self.pinned


@dataclass
class Layer:
    """A layer to slim, the channel variables of its input and output (one per concatenated block), and
    its slimmable twin's maker (None when it stays as it is)."""

    name: str
    module: nn.Module
    cin: Vars
    cout: Vars
    twin: Callable[[nn.Module], nn.Module | None]


@dataclass(frozen=True)
class Rule:
    """What one op does to channel groups.

    ``visit(analysis, node, target)`` records the channels of ``node``'s output (``target``: the
    module of a module call, else the function or method name). For a layer with weights to slim,
    ``visit`` returns its ``(input, output)`` channel variables, or None where this instance cannot be
    slimmed (its channels are then pinned), and ``twin`` makes the slimmable op that replaces it, or
    None where it stays as it is. ``subclasses``: a module rule also holds for subclasses of its class
    (an activation's subclass still acts per channel; a layer's may run another ``forward``).
    ``match``: for a class named by string, which of its instances the rule holds for.
    """

    visit: Callable[[Analysis, torch.fx.Node, Any], tuple[Vars, Vars] | None]
    twin: Callable[[nn.Module], nn.Module | None] | None = None
    subclasses: bool = False
    match: Callable[[nn.Module], bool] | None = None


def _tensor_meta(node: torch.fx.Node) -> Any:
    return node.meta.get("tensor_meta")


def shape(node: Any) -> tuple[int, ...] | None:
    """The shape of ``node``'s output when it is one tensor (from shape propagation), else None."""
    if not isinstance(node, torch.fx.Node):
        return None
    meta = _tensor_meta(node)
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def module_rule(mod: nn.Module) -> Rule | None:
    """The rule of ``mod``'s class: its own entry, or a base class's whose rule holds for subclasses."""
    kind = type(mod)
    for cls in kind.__mro__:
        rule = MODULE_RULES.get(cls) or MODULE_RULES.get(_qualified(cls))
        if rule is not None and (cls is kind or rule.subclasses) and (rule.match is None or rule.match(mod)):
            return rule
    return None


class Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping the layers of other packages that a rule names as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """torch's own modules, and those of a class named in :data:`MODULE_RULES` by string."""
        named = MODULE_RULES.get(_qualified(type(m)))
        leaf = named is not None and (named.match is None or named.match(m))
        return leaf or super().is_leaf_module(m, module_qualified_name)


class Analysis:
    """Walks a traced graph once, applying each op's rule: each tensor's channel variables and each
    layer's pair. Rules record through :meth:`same`, :meth:`fresh`, :meth:`couple` and :meth:`unsupported`."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        on_unsupported: str,
        groups: Groups | None = None,
        layers: dict[str, Layer] | None = None,
        unsupported: list[str] | None = None,
        part: str = "",
        slim_grouped: bool = True,
    ) -> None:
        # groups, layers and unsupported are shared by the parts of a partial conversion; ``part`` is the
        # traced submodule's name, which prefixes its layers' names. ``slim_grouped``: grouped convs
        # beyond depthwise slim in whole groups (off: they keep their channels, as before they could).
        self.gm = gm
        self.slim_grouped = slim_grouped
        self.groups = Groups() if groups is None else groups
        # Each tensor's channels as the variables of its blocks: one, or a concatenation's, end to end.
        self.var: dict[torch.fx.Node, Vars] = {}
        self.layers: dict[str, Layer] = {} if layers is None else layers
        self.reasons: list[str] = [] if unsupported is None else unsupported
        self.on_unsupported = on_unsupported
        self.prefix = f"{part}." if part else ""
        for node in gm.graph.nodes:
            self._visit(node)
        self._pin_tensors_read_outside_their_layer()

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

    def channels(self, node: Any) -> Vars | None:
        """``node``'s channel variables (None for a value that carries no channels)."""
        return self.var.get(node) if isinstance(node, torch.fx.Node) else None

    def fresh(self, node: torch.fx.Node) -> Vars | None:
        """Give ``node``'s output channels a new variable of their own (what a conv or linear produces)."""
        out = shape(node)
        if out is None or len(out) < 2:
            return None
        self.var[node] = (self.groups.new(out[1]),)
        return self.var[node]

    def same(self, node: torch.fx.Node, source: Any) -> None:
        """``node``'s channels are ``source``'s, one for one (an op acting on each channel alone)."""
        v = self.channels(source)
        out, inp = shape(node), shape(source)
        if v is None or out is None or inp is None or len(out) < 2 or out[1] != inp[1]:
            self.unsupported(node, "its output's channels do not follow its input's")
            return
        self.var[node] = v

    def sizes(self, vars_: Vars) -> list[int]:
        """The channel count of each block."""
        return [self.groups.size[self.groups.find(v)] for v in vars_]

    def couple(self, node: torch.fx.Node, operands: Sequence[Vars], what: str) -> None:
        """``node``'s channels are each operand's, block for block (an add, a concatenation along another
        dimension): unite the operands' blocks, or pin them when they are laid out differently."""
        first = operands[0]
        if any(self.sizes(v) != self.sizes(first) for v in operands[1:]):
            self.unsupported(node, f"{what} of tensors whose channels are concatenated differently")
            return
        for other in operands[1:]:
            for a, b in zip(first, other):
                self.groups.union(a, b)
        self.var[node] = first

    def unsupported(self, node: torch.fx.Node, why: str, also: Layer | None = None) -> None:
        """Keep the channels around ``node`` (its inputs', its output's, ``also``'s) at full width, for the
        reason ``why``; under ``on_unsupported='error'`` refuse instead."""
        where = (
            f"{self.prefix}{node.target}"
            if node.op == "call_module"
            else f"{node.op} {getattr(node.target, '__name__', node.target)}"
        )
        text = f"{node.name} ({where}): {why}"
        around = [self.channels(arg) or () for arg in node.all_input_nodes]
        self._refuse_or_pin(text, [v for vars_ in around for v in vars_], also)
        for v in self.fresh(node) or ():
            self.groups.pin(v, text)

    def _refuse_or_pin(self, text: str, channel_vars: Sequence[int], layer: Layer | None = None) -> None:
        """Keep ``channel_vars`` (and ``layer``'s input and output channels) at full width for the reason
        ``text``, or refuse with it under ``on_unsupported='error'``."""
        if self.on_unsupported == "error":
            raise ConversionError(
                f"make_slimmable: {text}; pin the modules around it (pin=[...]) or pass "
                f"on_unsupported='pin' to keep them at full width",
                cli=f"{text}; keep the modules around it at full width with --pin PATTERNS",
            )
        self.reasons.append(text)
        for v in [*channel_vars, *((*layer.cin, *layer.cout) if layer is not None else ())]:
            self.groups.pin(v, text)

    def tensor_args(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        """``node``'s positional arguments that are tensors."""
        return [a for a in node.args if isinstance(a, torch.fx.Node) and shape(a) is not None]

    def _visit(self, node: torch.fx.Node) -> None:
        if node.op in ("placeholder", "get_attr"):
            for v in self.fresh(node) or ():
                self.groups.pin(
                    v, "the network's input" if node.op == "placeholder" else f"tensor {node.target}"
                )
        elif node.op == "output":
            for arg in node.all_input_nodes:
                for v in self.channels(arg) or ():
                    self.groups.pin(v, "the network's output")
        elif node.op == "call_module":
            self._visit_module(node, self.gm.get_submodule(str(node.target)))
        elif node.op in ("call_function", "call_method"):
            self._visit_function(node)

    def _visit_module(self, node: torch.fx.Node, mod: nn.Module) -> None:
        name = f"{self.prefix}{node.target}"
        rule = module_rule(mod)
        if rule is not None and rule.twin is not None and name in self.layers:
            # One module, one width: its first call's channels too, or that call is sliced and this one not.
            self.unsupported(node, "the module is called more than once", self.layers[name])
            return
        sides = None if rule is None else rule.visit(self, node, mod)
        if rule is None or (rule.twin is not None and sides is None):
            self.unsupported(node, f"{type(mod).__name__} is not a layer make_slimmable can slim")
        elif rule.twin is not None and sides is not None:
            self.layers[name] = Layer(name, mod, *sides, twin=rule.twin)

    def _visit_function(self, node: torch.fx.Node) -> None:
        target = node.target
        method = node.op == "call_method"
        if shape(node) is None:
            # Sizes, shapes and python values carry no channels; any other op of a tensor that
            # returns no single tensor (chunk, split, unbind) is one whose coupling is unknown.
            if self.tensor_args(node) and not (
                (target in ("size", "dim", "numel")) if method else (target is getattr)
            ):
                self.unsupported(node, "an op that splits or packs tensors")
            return
        rule = (
            METHOD_RULES.get(str(target))
            if method
            else FUNCTION_RULES.get(target) or FUNCTION_RULES.get(_qualified(target))
        )
        if rule is None:
            self.unsupported(node, "make_slimmable does not know how this op couples channels")
        else:
            rule.visit(self, node, target)


# ---------------------------------------------------------------------------------------------- the rules


def _pass(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    a.same(node, node.args[0] if node.args else None)


def _elementwise(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    out = shape(node) or ()
    tied = []
    for arg in a.tensor_args(node):
        s = shape(arg) or ()
        if len(s) == len(out) >= 2 and s[1] == out[1] and a.channels(arg) is not None:
            tied.append(arg)
        elif not ((len(s) >= 2 and s[1] == 1) or (len(s) < 2 and all(d == 1 for d in s))):
            # Only an operand broadcast along channels (size 1) or a scalar leaves widths alone.
            a.unsupported(node, "operands whose channels differ")
            return
    if not tied:
        a.unsupported(node, "no operand carries the output's channels")
        return
    a.couple(node, [a.channels(arg) for arg in tied], "an elementwise op")  # type: ignore[misc]


def _cat(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    """Along channels: the output's blocks are the inputs' blocks laid end to end, each keeping its
    variable. Along another dimension every input has the output's channels: coupled block for block."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = shape(node)
    inputs = [a.channels(t) for t in tensors] if isinstance(tensors, (list, tuple)) else [None]
    if out is None or len(out) < 2 or not isinstance(dim, int) or any(v is None for v in inputs):
        a.unsupported(node, "a concatenation of tensors without channels")
    elif dim % len(out) == 1:
        a.var[node] = tuple(v for block in inputs for v in block)  # type: ignore[union-attr]
    else:
        a.couple(node, inputs, "a concatenation")  # type: ignore[arg-type]


def _flatten_from(a: Analysis, node: torch.fx.Node, src: Any, start_dim: int) -> None:
    """A flatten from ``start_dim`` keeps the channels only where it flattens a 1x1 map into ``[N, C]``."""
    inp, out = shape(src), shape(node)
    v = a.channels(src)
    spatial_one = inp is not None and all(d == 1 for d in inp[2:])
    if (
        v is not None
        and inp is not None
        and out is not None
        and len(out) == 2
        and start_dim == 1
        and spatial_one
        and out[1] == inp[1]
    ):
        a.var[node] = v
    else:
        a.unsupported(node, "a reshape that mixes channels with other dimensions")


def _flatten(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    _flatten_from(a, node, node.args[0], int(start))  # type: ignore[arg-type]


def _flatten_module(a: Analysis, node: torch.fx.Node, mod: nn.Flatten) -> None:
    _flatten_from(a, node, node.args[0] if node.args else None, mod.start_dim)


def _reshape(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    _flatten_from(a, node, node.args[0], 1)


def _reduce(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    given = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [given] if isinstance(given, int) else list(given) if isinstance(given, (list, tuple)) else []
    inp = shape(node.args[0])
    if inp is not None and dims and all(isinstance(d, int) and d % len(inp) >= 2 for d in dims):
        a.same(node, node.args[0])
    else:
        a.unsupported(node, "a reduction over channels")


def _input(a: Analysis, node: torch.fx.Node) -> tuple[Any, Vars | None]:
    src = node.args[0] if node.args else None
    return src, a.channels(src)


def _conv(a: Analysis, node: torch.fx.Node, mod: nn.Conv1d | nn.Conv2d) -> tuple[Vars, Vars] | None:
    """An ordinary conv produces channels of their own. A grouped one with as many input as output
    channels (depthwise: one channel a group) keeps each group's outputs on its inputs: output and input
    share their widths, slimmed in whole groups (unless ``slim_grouped`` is off, beyond depthwise)."""
    _, cin = _input(a, node)
    if cin is None or mod.padding_mode != "zeros":
        return None
    if mod.groups == 1:
        return cin, a.fresh(node)  # type: ignore[return-value]
    per_group = mod.in_channels // mod.groups
    if not (a.slim_grouped or mod.groups == mod.in_channels == mod.out_channels):
        why = "keeps its channels"
    elif mod.in_channels != mod.out_channels:
        why = f"with {mod.in_channels} input and {mod.out_channels} output channels keeps its channels"
    elif any(size % per_group for size in a.sizes(cin)):
        why = f"reading blocks of channels that are not whole groups of {per_group} keeps its channels"
    else:
        for v in cin:
            a.groups.require_step(v, per_group)
        a.var[node] = cin
        return cin, cin
    a.unsupported(node, f"a grouped conv (groups={mod.groups}) {why}")
    return cin, a.var[node]


def _conv_twin(mod: nn.Module) -> nn.Module | None:
    assert isinstance(mod, (nn.Conv1d, nn.Conv2d))
    if mod.groups > 1 and mod.in_channels != mod.out_channels:
        return None  # stays a plain conv at full width (both sides pinned)
    return (SlimConv1d if isinstance(mod, nn.Conv1d) else SlimConv2d)(
        mod.in_channels,
        mod.out_channels,
        mod.kernel_size,
        mod.stride,
        mod.padding,
        mod.dilation,
        groups=mod.groups,
        bias=mod.bias is not None,
    )


def _batch_norm(a: Analysis, node: torch.fx.Node, mod: nn.Module) -> tuple[Vars, Vars] | None:
    src, cin = _input(a, node)
    if cin is None or not (mod.affine and mod.track_running_stats):
        return None
    a.same(node, src)
    return cin, cin


def _batch_norm_twin(mod: nn.Module) -> nn.Module:
    bn_type = SlimBatchNorm1d if isinstance(mod, nn.BatchNorm1d) else SlimBatchNorm2d
    return bn_type(mod.num_features, eps=mod.eps, momentum=mod.momentum)  # type: ignore[arg-type]


def _bn_act_is_channelwise(mod: nn.Module) -> bool:
    """timm's fused BatchNorm + activation whose ``drop`` and ``act`` act per element (no parameters).

    Otherwise it is traced through, and its ``F.batch_norm`` pins the channels around it."""
    return not any(True for _ in itertools.chain(mod.drop.parameters(), mod.act.parameters()))  # type: ignore[union-attr]


def _bn_act_twin(mod: nn.Module) -> nn.Module:
    return SlimBatchNormAct2d(
        mod.num_features,  # type: ignore[arg-type]
        copy.deepcopy(mod.drop),  # type: ignore[arg-type]
        copy.deepcopy(mod.act),  # type: ignore[arg-type]
        eps=mod.eps,
        momentum=mod.momentum,
    )


def _linear(a: Analysis, node: torch.fx.Node, _mod: nn.Module) -> tuple[Vars, Vars] | None:
    src, cin = _input(a, node)
    if cin is None or len(shape(src) or ()) != 2:
        return None
    return cin, a.fresh(node)  # type: ignore[return-value]


def _linear_twin(mod: nn.Module) -> nn.Module:
    return SlimLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)  # type: ignore[arg-type]


PASS = Rule(_pass, subclasses=True)
"""An op that acts on each channel alone (activations, pooling, padding, dropout, resizing)."""
_ELEMENTWISE = Rule(_elementwise)
_REDUCE = Rule(_reduce)
_CONV = Rule(_conv, _conv_twin)
_BATCH_NORM = Rule(_batch_norm, _batch_norm_twin)
_LINEAR = Rule(_linear, _linear_twin)

MODULE_RULES: dict[type[nn.Module] | str, Rule] = {
    # Layers, by their exact class: a subclass may run another forward.
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.BatchNorm1d: _BATCH_NORM,
    nn.BatchNorm2d: _BATCH_NORM,
    nn.Linear: _LINEAR,
    "timm.layers.norm_act.BatchNormAct2d": Rule(_batch_norm, _bn_act_twin, match=_bn_act_is_channelwise),
    # timm's Linear: an nn.Linear whose forward differs only under TorchScript.
    "timm.layers.linear.Linear": _LINEAR,
    nn.Flatten: Rule(_flatten_module, subclasses=True),
    **dict.fromkeys(
        (
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
            nn.Dropout2d,
            nn.AlphaDropout,
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
        ),
        PASS,
    ),
}
"""Module rules by class, or by ``"package.module.Class"`` for a class pareco does not import."""

FUNCTION_RULES: dict[Any, Rule] = {
    **dict.fromkeys(
        (operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd, operator.imul),
        _ELEMENTWISE,
    ),
    **dict.fromkeys((torch.add, torch.mul, torch.sub, torch.div), _ELEMENTWISE),
    **dict.fromkeys((torch.cat, torch.concat, torch.concatenate), Rule(_cat)),
    **dict.fromkeys((torch.mean, torch.sum, torch.amax), _REDUCE),
    torch.flatten: Rule(_flatten),
    torch.reshape: Rule(_reshape),
    # torchvision's residual drop scales whole samples, never single channels.
    "torchvision.ops.stochastic_depth.stochastic_depth": PASS,
    **dict.fromkeys(
        (
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
            torch.relu,
            torch.sigmoid,
            torch.tanh,
            torch.nn.functional.relu_,
            torch.clamp,
            torch.clip,
        ),
        PASS,
    ),
}
"""Function rules by function, or by ``"package.module.function"`` for one of a package pareco does not import."""

METHOD_RULES: dict[str, Rule] = {
    **dict.fromkeys(("add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"), _ELEMENTWISE),
    **dict.fromkeys(("mean", "sum", "amax"), _REDUCE),
    "flatten": Rule(_flatten),
    **dict.fromkeys(("view", "reshape"), Rule(_reshape)),
    **dict.fromkeys(
        (
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
        ),
        PASS,
    ),
}
"""Tensor method rules by method name."""
