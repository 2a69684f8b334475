"""How each op of a traced network couples channels: the rule table :func:`make_slimmable` reads.

Every tensor of the traced graph carries *channel variables*, one per block of its channels (one,
or a concatenation's inputs laid end to end), and a *channel axis*: dimension 1 unless a permute moved
the channels (ConvNeXt's channels-last blocks). A union-find (:class:`Groups`) unites the variables
that must keep one width and pins those that must stay at full width, with the reason. Each op's
rule says what the op does to them, and it is one entry of one of three tables:

- :data:`MODULE_RULES`, by module class (``nn.ReLU``), or by ``"package.module.Class"`` for a class
  of a package pareco does not import (timm's layers, traced as one call);
- :data:`FUNCTION_RULES`, by function (``F.relu``, ``operator.add``), or by its qualified name;
- :data:`METHOD_RULES`, by tensor method name (``"relu"``, ``"view"``).

A :class:`Rule`'s ``visit(analysis, node, target)`` records the node's output channels and their axis
through the :class:`Analysis` methods (``same``, ``fresh``, ``couple``, ``unsupported``,
``channel_axis``). A layer with weights to slim also names its slimmable ``twin``
(:mod:`pareco_runtime.ops`), which owns how it slices and how its MACs count. An op without a rule
keeps the channels around it at full width, saying which op. A per-channel parameter that a module of
the model's own code reads in its ``forward`` (a layer scale) is no op: :class:`Analysis` gives it
channels of its own, which the op applying it couples with those it scales, and
:func:`~pareco_runtime.convert.make_slimmable` slims it in place.

A projection's channels split into attention heads are followed as whole heads to the merge back (the
"attention heads" section below, :data:`HEAD_ATTRIBUTES` for modules that read their head count from
attributes).

Adding an op: one entry (reusing :data:`PASS` for an op that acts on each element alone, wherever the
channels lie, or :data:`SPATIAL` for one that acts on each channel's positions with the channels in
dimension 1), and a test that the converted network slices exactly and counts MACs as torch does
(docs/own-model.md).
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

from .models.base import SlimmableNet
from .ops import (
    SlimBatchNorm1d,
    SlimBatchNorm2d,
    SlimBatchNormAct2d,
    SlimChannelParameters,
    SlimConv1d,
    SlimConv2d,
    SlimLayerNorm,
    SlimLinear,
    SlimMultiheadAttention,
)

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
    # Input entries per channel: a Linear reading a flattened [N, C, H, W] map reads H*W per channel.
    in_span: int = 1


@dataclass(frozen=True)
class Rule:
    """What one op does to channel groups.

    ``visit(analysis, node, target)`` records the channels of ``node``'s output (``target``: the
    module of a module call, else the function or method name). For a layer with weights to slim,
    ``visit`` returns its ``(input, output)`` channel variables, or None where this instance cannot be
    slimmed (its channels are then pinned, for the reason ``visit`` gave through
    :meth:`Analysis.unsupported`, else as no layer make_slimmable can slim), and ``twin`` makes the
    slimmable op that replaces it, or None where it stays as it is. ``subclasses``: a module rule also holds for subclasses of its class
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


class Analysis:
    """Walks a traced graph once, applying each op's rule: each tensor's channel variables and channel
    axis, and each layer's pair. Rules record through :meth:`same`, :meth:`fresh`, :meth:`couple` and
    :meth:`unsupported`; :attr:`channel_params` are the per-channel parameters of modules that are no
    layer (a layer scale), which make_slimmable slims in place."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        on_unsupported: str,
        groups: Groups | None = None,
        layers: dict[str, Layer] | None = None,
        unsupported: list[str] | None = None,
        part: str = "",
        slim_grouped: bool = True,
        root: nn.Module | None = None,
    ) -> None:
        # groups, layers and unsupported are shared by the parts of a partial conversion; ``part`` is the
        # traced submodule's name, which prefixes its layers' names. ``slim_grouped``: grouped convs
        # beyond depthwise slim in whole groups (off: they keep their channels, as before they could).
        # ``root`` is the module traced (the graph module holds containers of its own on the paths to the
        # tensors it reads).
        self.gm = gm
        self.root = gm if root is None else root
        self.slim_grouped = slim_grouped
        self.groups = Groups() if groups is None else groups
        # Each tensor's channels as the variables of its blocks: one, or a concatenation's, end to end.
        self.var: dict[torch.fx.Node, Vars] = {}
        # The dimension holding each tensor's channels: 1 unless a permute moved them (channels-last).
        self.axis: dict[torch.fx.Node, int] = {}
        # Tensors whose channel axis holds ``span`` consecutive entries per channel of their blocks'
        # variables (a flattened [N, C, H, W] map: H*W features a channel), kept out of ``var`` so that
        # only the rules that know spans read them: by node, (variables, span).
        self.spanned: dict[torch.fx.Node, tuple[Vars, int]] = {}
        # Per-channel parameters read by the ops of a module that is no layer (a layer scale): by that
        # module's name, each parameter's name -> (its channel dimension, its channel variable).
        self.channel_params: dict[str, dict[str, tuple[int, int]]] = {}
        self._param_vars: dict[int, int] = {}
        self._param_reads: set[torch.fx.Node] = set()
        self.layers: dict[str, Layer] = {} if layers is None else layers
        # Attention heads: MACs of the matmuls between them, per channel of their variable; the modules
        # whose attributes count them (by name: the attributes, their variable); names of their dimensions.
        self.head_macs: list[tuple[int, int]] = []
        self.head_owners: dict[str, tuple[tuple[str, str], int]] = {}
        self.dim_names: dict[int, str] = {}
        self.reasons: list[str] = [] if unsupported is None else unsupported
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

    def channels(self, node: Any) -> Vars | None:
        """``node``'s channel variables (None for a value that carries no channels)."""
        return self.var.get(node) if isinstance(node, torch.fx.Node) else None

    def all_channels(self, node: Any) -> Vars:
        """``node``'s channel variables, spanned ones included (empty for a value without channels)."""
        if isinstance(node, torch.fx.Node) and node in self.spanned:
            return self.spanned[node][0]
        return self.channels(node) or ()

    def channel_axis(self, node: Any) -> int:
        """The dimension of ``node``'s channels (1 unless a permute moved them)."""
        return self.axis.get(node, 1) if isinstance(node, torch.fx.Node) else 1

    def fresh(self, node: torch.fx.Node, axis: int = 1) -> Vars | None:
        """Give ``node``'s output channels, on dimension ``axis``, a new variable of their own (what a
        conv or linear produces)."""
        out = shape(node)
        if out is None or len(out) < 2:
            return None
        self.var[node] = (self.groups.new(out[axis]),)
        self.axis[node] = axis % len(out)
        return self.var[node]

    def same(self, node: torch.fx.Node, source: Any, pointwise: bool = False) -> None:
        """``node``'s channels are ``source``'s, one for one and on the same axis (an op acting on each
        channel alone): any axis for a ``pointwise`` op, else dimension 1, where a spatial op (pooling,
        padding, resizing) takes the channels."""
        v = self.channels(source)
        out, inp = shape(node), shape(source)
        axis = self.channel_axis(source)
        if pointwise and isinstance(source, torch.fx.Node) and source in self.spanned and out == inp:
            self.spanned[node] = self.spanned[source]
            self.axis[node] = axis
            return
        if not pointwise and axis != 1:
            self.unsupported(node, f"a spatial op on channels in dimension {axis}, not 1")
            return
        if v is None or out is None or inp is None or len(out) != len(inp) or out[axis] != inp[axis]:
            self.unsupported(node, "its output's channels do not follow its input's")
            return
        self.var[node] = v
        self.axis[node] = axis

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
        around = [self.all_channels(arg) for arg in node.all_input_nodes]
        self._refuse_or_pin(text, [v for vars_ in around for v in vars_], also)
        # Its output's channels, pinned, on its first input's channel axis where the ranks agree.
        rank = len(shape(node) or ())
        first = next((a for a in node.all_input_nodes if len(shape(a) or ()) == rank and a in self.var), None)
        for v in self.fresh(node, self.channel_axis(first)) or ():
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
        if node.op == "get_attr" and self._attribute(node):
            return
        if _visit_heads(self, node):
            return
        if node.op in ("placeholder", "get_attr"):
            for v in self.fresh(node) or ():
                self.groups.pin(
                    v, "the network's input" if node.op == "placeholder" else f"tensor {node.target}"
                )
        elif node.op == "output":
            for arg in node.all_input_nodes:
                for v in self.all_channels(arg):
                    self.groups.pin(v, "the network's output")
        elif node.op == "call_module":
            self._visit_module(node, self.gm.get_submodule(str(node.target)))
        elif node.op in ("call_function", "call_method"):
            self._visit_function(node)

    def _attribute(self, node: torch.fx.Node) -> bool:
        """A tensor the model holds with one dimension over 1 has its channels there (a layer scale ``[C]``
        or ``[C, 1, 1]``): a parameter of a module that can hold slimmed ones narrows with them, any other
        such tensor is pinned. Whether ``node`` reads such a tensor."""
        tensor = functools.reduce(getattr, str(node.target).split("."), self.gm)
        dims: tuple[int, ...] = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
        wide = [d for d, n in enumerate(dims) if n != 1]
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
            self.var[node] = (self.groups.new(dims[wide[0]]),)
            self.groups.pin(self.var[node][0], f"tensor {node.target}")
            return True
        if id(tensor) not in self._param_vars:
            self._param_vars[id(tensor)] = self.groups.new(dims[wide[0]])
        v = self._param_vars[id(tensor)]
        self.channel_params.setdefault(f"{self.prefix}{owner}", {})[attr] = (wide[0], v)
        self.var[node] = (v,)
        self._param_reads.add(node)
        return True

    def _visit_module(self, node: torch.fx.Node, mod: nn.Module) -> None:
        name = f"{self.prefix}{node.target}"
        rule = module_rule(mod)
        if rule is not None and rule.twin is not None and name in self.layers:
            # One module, one width: its first call's channels too, or that call is sliced and this one not.
            self.unsupported(node, "the module is called more than once", self.layers[name])
            return
        sides = None if rule is None else rule.visit(self, node, mod)
        if rule is None or (rule.twin is not None and sides is None and node not in self.var):
            self.unsupported(node, f"{type(mod).__name__} is not a layer make_slimmable can slim")
        elif rule.twin is not None and sides is not None:
            # Only a rule that knows spans (a Linear's) returns sides for a spanned input.
            src = node.args[0] if node.args else None
            span = self.spanned[src][1] if isinstance(src, torch.fx.Node) and src in self.spanned else 1
            self.layers[name] = Layer(name, mod, *sides, twin=rule.twin, in_span=span)

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
    a.same(node, node.args[0] if node.args else None, pointwise=True)


def _spatial(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    a.same(node, node.args[0] if node.args else None)


def _prelu(a: Analysis, node: torch.fx.Node, mod: nn.PReLU) -> None:
    """One slope for every channel acts per element. One slope per channel is a weight of the full width
    that the module, left as it is, cannot narrow (F.prelu refuses k channels against C slopes): the
    channels around it keep their width."""
    if mod.num_parameters == 1:
        _pass(a, node, mod)
    else:
        a.unsupported(node, f"a PReLU with {mod.num_parameters} per-channel slopes keeps its channels")


def _elementwise(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    """Operands broadcast from the right: those whose channels fill the output's channel axis are
    coupled; every other one must have size 1 there (a gate, a scalar) or not reach it."""
    out = shape(node) or ()
    args = a.tensor_args(node)

    def placed(arg: torch.fx.Node) -> int:  # ``arg``'s channel axis, counted in the output's dimensions
        return a.channel_axis(arg) + len(out) - len(shape(arg) or ())

    carriers = [
        arg
        for arg in args
        if a.channels(arg) is not None
        and 0 <= placed(arg) < len(out)
        and (shape(arg) or ())[a.channel_axis(arg)] == out[placed(arg)]
    ]
    # A one-channel operand (a spatial attention map) broadcasts when a wider one carries the channels.
    carriers = [arg for arg in carriers if out[placed(arg)] != 1] or carriers
    axes = {placed(arg) for arg in carriers}
    if len(out) < 2 or len(axes) != 1:
        why = (
            "no operand carries the output's channels" if not axes else "operands' channels on different axes"
        )
        a.unsupported(node, why)
        return
    axis = axes.pop()
    for arg in args:
        s = shape(arg) or ()
        at = axis - (len(out) - len(s))
        if arg not in carriers and at >= 0 and s[at] != 1:
            a.unsupported(node, "operands whose channels differ")
            return
    a.axis[node] = axis
    a.couple(node, [a.channels(arg) for arg in carriers], "an elementwise op")  # type: ignore[misc]


def _cat(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    """Along channels: the output's blocks are the inputs' blocks laid end to end, each keeping its
    variable. Along another dimension every input has the output's channels: coupled block for block.
    Either way the inputs' channels must lie on one axis, which the output's keep."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = shape(node)
    inputs = [a.channels(t) for t in tensors] if isinstance(tensors, (list, tuple)) else [None]
    axes = {a.channel_axis(t) for t in tensors} if isinstance(tensors, (list, tuple)) else set()
    if out is None or len(out) < 2 or not isinstance(dim, int) or any(v is None for v in inputs):
        a.unsupported(node, "a concatenation of tensors without channels")
    elif len(axes) != 1:
        a.unsupported(node, "a concatenation of tensors whose channels lie in different dimensions")
    elif dim % len(out) == (axis := axes.pop()):
        a.var[node] = tuple(v for block in inputs for v in block)  # type: ignore[union-attr]
        a.axis[node] = axis
    else:
        a.axis[node] = axis
        a.couple(node, inputs, "a concatenation")  # type: ignore[arg-type]


def _flatten_from(a: Analysis, node: torch.fx.Node, src: Any, start_dim: int) -> None:
    """A flatten from ``start_dim`` keeps the channels only where it flattens a 1x1 map of channels in
    dimension 1 into ``[N, C]``."""
    inp, out = shape(src), shape(node)
    v = a.channels(src)
    spatial_one = inp is not None and all(d == 1 for d in inp[2:])
    if (
        v is not None
        and a.channel_axis(src) == 1
        and inp is not None
        and out is not None
        and len(out) == 2
        and start_dim == 1
        and spatial_one
        and out[1] == inp[1]
    ):
        a.var[node] = v
    elif not _flatten_channel_major(a, node, src, start_dim):
        a.unsupported(node, "a reshape that mixes channels with other dimensions")


def _flatten_channel_major(a: Analysis, node: torch.fx.Node, src: Any, start_dim: int) -> bool:
    """A flatten of ``[N, C, *positions]`` channels into ``[N, C * positions]`` features, channel by channel:
    each channel's positions become that many consecutive features, so the active features are those of
    the active channels, block by block (a Linear reads ``k * positions`` of a block's). A reshape must
    leave the feature count to be computed (``-1`` with the batch given, or from ``x.size()``): a constant
    would not fit a narrower width. Whether ``node`` is such a flatten."""
    inp, out, v = shape(src), shape(node), a.channels(src)
    if v is None or inp is None or out is None or len(inp) < 3 or a.channel_axis(src) != 1:
        return False
    if start_dim % len(inp) != 1 or len(out) != 2 or out[1] != math.prod(inp[1:]):
        return False
    if node.target in ("view", "reshape", torch.reshape):
        sizes = node.args[1] if len(node.args) == 2 else node.args[1:]
        sizes = sizes if isinstance(sizes, (list, tuple)) else ()
        computed = len(sizes) == 2 and (
            isinstance(sizes[1], torch.fx.Node) or (sizes[1] == -1 and sizes[0] != -1)
        )
        if not computed:
            a.unsupported(node, "a flatten to a constant number of features")
            return True
    a.spanned[node] = (v, math.prod(inp[2:]))
    a.axis[node] = 1
    return True


def _flatten(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    _flatten_from(a, node, node.args[0], int(start))  # type: ignore[arg-type]


def _flatten_module(a: Analysis, node: torch.fx.Node, mod: nn.Flatten) -> None:
    _flatten_from(a, node, node.args[0] if node.args else None, mod.start_dim)


def _reshape(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    """:func:`_reshape_channels`; then a size read off a tensor's channel count (``x.shape[-1]``) for a
    dimension other than the one the output's channels land on pins that tensor's channels: the
    reshape asks for the full count there at every width (MaxViT's attention output, reshaped to its
    input's ``D`` while its own channels are pinned, failed at width 0.5 before this rule)."""
    _reshape_channels(a, node)
    mine = a.channels(node)
    for e, size in enumerate(_reshape_sizes(node) or ()):
        other = _channel_count_of(a, size) if isinstance(size, torch.fx.Node) else None
        if other is None or (mine is not None and a.channel_axis(node) == e and _united(a, mine, other)):
            continue
        for v in other:
            a.groups.pin(
                v, f"{node.name}: a reshape sizes its dimension {e} by another tensor's channel count"
            )


def _united(a: Analysis, one: Vars, other: Vars) -> bool:
    """Whether ``one`` and ``other`` are the same channels, block for block."""
    return len(one) == len(other) and all(a.groups.find(x) == a.groups.find(y) for x, y in zip(one, other))


def _reshape_channels(a: Analysis, node: torch.fx.Node) -> None:
    """A reshape that keeps the channel dimension whole, as one dimension of the output after as many
    elements as before it, keeps the channels there (timm's ``gamma.reshape(1, -1, 1, 1)``, MaxViT's
    windows cut from the other dimensions), unless it names their count as a constant, which a narrower
    width would not fit; any other reshape is a flatten."""
    src = node.args[0]
    inp, out, v = shape(src), shape(node), a.channels(src)
    axis = a.channel_axis(src)
    if v is None or inp is None or out is None or inp[axis] == 1:
        _flatten_from(a, node, src, 1)
        return
    before = math.prod(inp[:axis])
    # Dimensions after the same number of elements differ only by dimensions of size 1: one has C.
    lands = [e for e in range(len(out)) if out[e] == inp[axis] and math.prod(out[:e]) == before]
    if not lands:
        _flatten_from(a, node, src, 1)
        return
    sizes = node.args[1] if len(node.args) == 2 else node.args[1:]
    sizes = sizes if isinstance(sizes, (list, tuple)) else ()
    given = sizes[lands[0]] if len(sizes) == len(out) else -1
    if isinstance(given, int) and given != -1:
        a.unsupported(node, "a reshape to a constant number of channels")
        return
    if isinstance(given, torch.fx.Node):
        # The count read off another tensor's channels (MaxViT's attention: ``out.reshape(B, G, P, D)``
        # with ``D`` from its input's shape): the two keep one width, or the reshape would not fit.
        other = _channel_count_of(a, given)
        if other is None:
            a.unsupported(node, "a reshape to a computed number of channels")
            return
        a.couple(node, [v, other], "a reshape to another tensor's channel count")
        if a.var.get(node) is not v:  # laid out differently: pinned
            return
    a.var[node] = v
    a.axis[node] = lands[0]


def _channel_count_of(a: Analysis, size: torch.fx.Node) -> Vars | None:
    """The channels of the tensor whose channel count ``size`` reads (``x.shape[d]``, ``x.size(d)``,
    ``x.size()[d]`` with ``d`` its channel axis); None for any other computed size."""
    if size.op == "call_method" and size.target == "size" and len(size.args) == 2:
        tensor, dim = size.args
    elif size.op == "call_function" and size.target is operator.getitem and len(size.args) == 2:
        whole, dim = size.args
        is_shape = isinstance(whole, torch.fx.Node) and (
            (whole.op == "call_function" and whole.target is getattr and whole.args[1:] == ("shape",))
            or (whole.op == "call_method" and whole.target == "size" and len(whole.args) == 1)
        )
        if not is_shape:
            return None
        tensor = whole.args[0]  # type: ignore[union-attr]
    else:
        return None
    rank = len(shape(tensor) or ())
    if not isinstance(dim, int) or not rank or dim % rank != a.channel_axis(tensor):
        return None
    return a.channels(tensor)


def _permute(a: Analysis, node: torch.fx.Node, target: Any) -> None:
    """A permute or transpose moves the channels to the dimension their axis goes to."""
    src = node.args[0]
    inp = shape(src)
    given = list(node.args[1:]) or [node.kwargs.get(k) for k in ("dims", "dim0", "dim1") if k in node.kwargs]
    listed = given[0] if len(given) == 1 and isinstance(given[0], (list, tuple)) else given
    dims = [d for d in listed if isinstance(d, int)]
    if a.channels(src) is None or inp is None or len(dims) != len(listed):
        a.unsupported(node, "a permute of a tensor without channels or by computed dimensions")
        return
    rank = len(inp)
    if target in ("permute", torch.permute):
        order = [d % rank for d in dims]
    else:  # transpose / swapaxes of two dimensions
        i, j = (d % rank for d in dims)
        order = list(range(rank))
        order[i], order[j] = j, i
    a.var[node] = a.var[src]  # type: ignore[index]
    a.axis[node] = order.index(a.channel_axis(src))


def _reduce(a: Analysis, node: torch.fx.Node, _target: Any) -> None:
    given = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [given] if isinstance(given, int) else list(given) if isinstance(given, (list, tuple)) else []
    src, out = node.args[0], shape(node)
    inp, axis = shape(src), a.channel_axis(src)
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if inp is None or out is None or not dims or not all(isinstance(d, int) for d in dims):
        a.unsupported(node, "a reduction over channels")
        return
    gone = {d % len(inp) for d in dims}
    # Over other dimensions than the batch's and the channels': the channels stay, on an axis that
    # moves down by the dimensions dropped before it.
    lands = axis if keep else axis - sum(1 for d in gone if d < axis)
    if gone & {0, axis} or a.channels(src) is None or len(out) <= lands or out[lands] != inp[axis]:
        a.unsupported(node, "a reduction over channels")
        return
    a.var[node] = a.var[src]  # type: ignore[index]
    a.axis[node] = lands


def _input(a: Analysis, node: torch.fx.Node) -> tuple[Any, Vars | None]:
    src = node.args[0] if node.args else None
    return src, a.channels(src)


def _channels_first(a: Analysis, node: torch.fx.Node, src: Any) -> bool:
    """Whether ``src``'s channels lie in dimension 1, where a conv or a batch norm reads them; where not,
    ``node``'s channels are pinned, saying where they lie."""
    axis = a.channel_axis(src)
    if axis != 1:
        a.unsupported(node, f"its input's channels lie in dimension {axis}, not 1")
    return axis == 1


def _conv(a: Analysis, node: torch.fx.Node, mod: nn.Conv1d | nn.Conv2d) -> tuple[Vars, Vars] | None:
    """An ordinary conv produces channels of their own. A grouped one with as many input as output
    channels (depthwise: one channel a group) keeps each group's outputs on its inputs: output and input
    share their widths, slimmed in whole groups (unless ``slim_grouped`` is off, beyond depthwise).
    Either reads its input's channels in dimension 1."""
    src, cin = _input(a, node)
    if cin is None or not _channels_first(a, node, src) or mod.padding_mode != "zeros":
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
    if cin is None or not _channels_first(a, node, src) or not (mod.affine and mod.track_running_stats):
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
    """A Linear on the channel axis, the last: ``[N, C]`` features, ``[N, H, W, C]`` channels-last maps, or
    ``[N, C * H * W]`` features of a flattened map (its Layer's ``in_span``: H*W features a channel)."""
    src, cin = _input(a, node)
    if isinstance(src, torch.fx.Node) and src in a.spanned:
        cin = a.spanned[src][0]  # a flattened map: the Layer's in_span says how many features a channel
    if cin is None or a.channel_axis(src) != len(shape(src) or ()) - 1:
        return None
    return cin, a.fresh(node, -1)  # type: ignore[return-value]


def _linear_twin(mod: nn.Module) -> nn.Module:
    return SlimLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)  # type: ignore[arg-type]


def _is_layer_norm_over_one_axis(mod: nn.Module) -> bool:
    """A LayerNorm whose forward is nn.LayerNorm's over one axis: timm's without its fast-norm path
    (another kernel)."""
    return (
        isinstance(mod, nn.LayerNorm)
        and len(mod.normalized_shape) == 1
        and not getattr(mod, "_fast_norm", False)
    )


def _layer_norm(
    a: Analysis, node: torch.fx.Node, _mod: nn.Module, channels_first: bool
) -> tuple[Vars, Vars] | None:
    """A LayerNorm over the channel axis (dimension 1 for ``channels_first``, else the last) is a
    layer: it normalises the active channels."""
    src, cin = _input(a, node)
    inp = shape(src)
    want = 1 if channels_first else len(inp or ()) - 1
    if cin is None or inp is None or a.channel_axis(src) != want or (channels_first and len(inp) != 4):
        a.unsupported(node, "a LayerNorm over other than the channel axis")
        return None
    a.same(node, src, pointwise=True)
    return cin, cin


def _layer_norm_twin(mod: nn.Module, channels_first: bool) -> nn.Module:
    """The :class:`~pareco_runtime.ops.SlimLayerNorm` of a LayerNorm class of :data:`MODULE_RULES`."""
    assert isinstance(mod, nn.LayerNorm)
    # The subclass's own attributes (timm's _fast_norm), which its plain twin carries again.
    plain_state = vars(nn.LayerNorm(1))
    return SlimLayerNorm(
        mod.normalized_shape[0],
        eps=mod.eps,
        elementwise_affine=mod.elementwise_affine,
        bias=mod.bias is not None,
        channels_first=channels_first,
        plain_type=type(mod),
        plain_attributes={k: v for k, v in vars(mod).items() if k not in plain_state},
    )


def _layer_norm_rule(channels_first: bool) -> Rule:
    """The rule of a LayerNorm class normalising one axis: dimension 1 of ``[N, C, H, W]`` (permuted to the
    last and back) for ``channels_first``, else the last axis."""
    return Rule(
        functools.partial(_layer_norm, channels_first=channels_first),
        functools.partial(_layer_norm_twin, channels_first=channels_first),
        match=_is_layer_norm_over_one_axis,
    )


def _linear_of_tokens(a: Analysis, node: torch.fx.Node, mod: nn.Module) -> tuple[Vars, Vars] | None:
    """A Linear on the channel axis; or one whose input's channels are pinned and tracked on another axis
    (an op make_slimmable does not follow put them there, a token tensor ``[N, L, D]`` after it): it
    reads its last axis at full width, and its output still has channels of its own."""
    sides = _linear(a, node, mod)
    src, cin = _input(a, node)
    inp = shape(src)
    if sides is not None or cin is None or inp is None or not all(a.groups.is_pinned(v) for v in cin):
        return sides
    fixed = a.groups.new(inp[-1])
    a.groups.pin(fixed, a.groups.pinned[a.groups.find(cin[0])])
    return (fixed,), a.fresh(node, -1)  # type: ignore[return-value]


def _embedding(a: Analysis, node: torch.fx.Node, mod: nn.Embedding) -> None:
    """An embedding's vectors are channels on the last axis, kept at their width (the stream they start)."""
    for v in a.fresh(node, -1) or ():
        a.groups.pin(v, f"{node.name} ({a.prefix}{node.target}): an nn.Embedding keeps its width")


def _multihead_attention(
    a: Analysis, node: torch.fx.Node, mod: nn.MultiheadAttention
) -> tuple[Vars, Vars] | None:
    """Self-attention (one tensor as query, key and value, channels on its last axis) without attention
    weights or masks: its heads are channels of their own, slimmed in whole heads; its output has its
    input's channels (the embedding both projections share)."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights")
    given = {**dict(zip(names, node.args)), **node.kwargs}
    x = given.get("query")
    cin, inp = a.channels(x), shape(x)
    if cin and inp and a.channel_axis(x) != len(inp) - 1 and all(a.groups.is_pinned(v) for v in cin):
        # Pinned channels tracked on another axis (a token tensor the network takes): its last at full width.
        cin = (a.groups.new(inp[-1]),)
        a.groups.pin(cin[0], f"{node.name} ({a.prefix}{node.target}): its input's embedding")
        x_axis = len(inp) - 1
    else:
        x_axis = a.channel_axis(x)
    plain = mod._qkv_same_embed_dim and mod.bias_k is None and not mod.add_zero_attn
    masked = any(given.get(k) is not None for k in ("key_padding_mask", "attn_mask")) or given.get(
        "is_causal"
    )
    if (
        not plain
        or masked
        or given.get("need_weights", True) is not False
        or not (given.get("key") is x and given.get("value") is x)
        or cin is None
        or inp is None
        or len(cin) != 1
        or x_axis != len(inp) - 1
    ):
        a.unsupported(node, "an nn.MultiheadAttention other than self-attention with need_weights=False")
        out = a.groups.new(mod.embed_dim)
        a.groups.pin(out, f"{node.name} ({a.prefix}{node.target}): an nn.MultiheadAttention it cannot slim")
        a.var[node], a.axis[node] = (out,), len(inp or (0, 0, 0)) - 1
        return None
    heads = a.groups.new(mod.embed_dim)
    a.groups.require_step(heads, mod.head_dim)
    a.dim_names.setdefault(heads, f"{a.prefix}{node.target}.heads")
    a.var[node], a.axis[node] = cin, x_axis
    return cin, (heads,)


def _multihead_attention_twin(mod: nn.Module) -> nn.Module:
    assert isinstance(mod, nn.MultiheadAttention)
    return SlimMultiheadAttention(
        mod.embed_dim, mod.num_heads, mod.dropout, mod.in_proj_bias is not None, batch_first=mod.batch_first
    )


PASS = Rule(_pass, subclasses=True)
"""An op that acts on each element alone (activations, dropout): the channels may lie on any axis."""
SPATIAL = Rule(_spatial, subclasses=True)
"""An op that acts on each channel alone across its positions (pooling, padding, resizing, dropping whole
channels): the channels must lie in dimension 1."""
_ELEMENTWISE = Rule(_elementwise)
_REDUCE = Rule(_reduce)
_CONV = Rule(_conv, _conv_twin)
_BATCH_NORM = Rule(_batch_norm, _batch_norm_twin)
_LINEAR = Rule(_linear_of_tokens, _linear_twin)
_LAYER_NORM = _layer_norm_rule(channels_first=False)
_LAYER_NORM_2D = _layer_norm_rule(channels_first=True)
_PERMUTE = Rule(_permute)

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
    # LayerNorm classes whose forward is nn.LayerNorm's state normalising one axis: the last, or
    # dimension 1 of [N, C, H, W] (the 2d ones permute it to the last and back).
    nn.LayerNorm: _LAYER_NORM,
    "timm.layers.norm.LayerNorm": _LAYER_NORM,
    "timm.layers.norm.LayerNorm2d": _LAYER_NORM_2D,
    "torchvision.models.convnext.LayerNorm2d": _LAYER_NORM_2D,
    nn.Flatten: Rule(_flatten_module, subclasses=True),
    nn.PReLU: Rule(_prelu, subclasses=True),
    nn.Embedding: Rule(_embedding, subclasses=True),
    nn.MultiheadAttention: Rule(_multihead_attention, _multihead_attention_twin),
    **dict.fromkeys(
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
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
        ),
        PASS,
    ),
    **dict.fromkeys(
        (
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
        ),
        SPATIAL,
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
    **dict.fromkeys((torch.permute, torch.transpose, torch.swapaxes), _PERMUTE),
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
            torch.relu,
            torch.sigmoid,
            torch.tanh,
            torch.nn.functional.relu_,
            torch.clamp,
            torch.clip,
        ),
        PASS,
    ),
    **dict.fromkeys(
        (
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
        ),
        SPATIAL,
    ),
}
"""Function rules by function, or by ``"package.module.function"`` for one of a package pareco does not import."""

METHOD_RULES: dict[str, Rule] = {
    **dict.fromkeys(("add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"), _ELEMENTWISE),
    **dict.fromkeys(("mean", "sum", "amax"), _REDUCE),
    **dict.fromkeys(("permute", "transpose", "swapaxes"), _PERMUTE),
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


# ------------------------------------------------------------------------------------- attention heads
#
# A projection's channels split into heads (a reshape of the channel axis into ``(H, D)``, or
# ``(3, H, D)`` for fused q/k/v) make a *heads tensor*: its channel variable still counts channels,
# ``H x D``, but its channel axis holds the H heads, each of D channels (the unit): every other axis
# has a fixed size, so whole heads slim along that one axis. The ops between a split and the merge back
# into ``H x D`` channels (permutes, unbind of q/k/v, the attention matmuls, softmax, scaling, masks)
# follow the heads; any other op on them pins them. The number of heads in a reshape is ``-1``, or a
# constant that an attribute of the module calling it holds (:data:`HEAD_ATTRIBUTES`), which
# make_slimmable makes read the active heads.

HEAD_ATTRIBUTES: dict[type[nn.Module] | str, tuple[str, str]] = {
    "timm.layers.attention.Attention": ("num_heads", "attn_dim"),
}
"""Attention modules whose ``forward`` reshapes by a head count and a heads' channel count read from
attributes: by class (or ``"package.module.Class"``), the two attribute names."""

_RESHAPES = frozenset({"reshape", "view", torch.reshape})
_FLATTENS = frozenset({"flatten", torch.flatten})
_PARTS = frozenset({"unbind", "chunk", "split", torch.unbind, torch.chunk, torch.split})
_SOFTMAX = frozenset({"softmax", F.softmax, torch.softmax})
_MATMUL = frozenset({"matmul", operator.matmul, torch.matmul})


def _unit(a: Analysis, node: Any) -> int:
    """Channels per position of ``node``'s channel axis: a head's size on a heads tensor, else 1."""
    v, out = a.channels(node), shape(node)
    if v is None or out is None or len(v) != 1 or a.channel_axis(node) >= len(out):
        return 1
    size, n = a.sizes(v)[0], out[a.channel_axis(node)]
    return size // n if n and size > n and size % n == 0 else 1


def _reshape_sizes(node: torch.fx.Node) -> list[Any] | None:
    """The sizes a reshape or view asks for, one entry a dimension (ints, ``-1`` or computed nodes)."""
    given = node.args[1:]
    sizes = given[0] if len(given) == 1 and isinstance(given[0], (list, tuple)) else given
    return list(sizes) if sizes else None


def _owner(a: Analysis, node: torch.fx.Node) -> tuple[str, nn.Module]:
    """The module whose ``forward`` calls ``node`` (its name without the part's prefix, and itself)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    return path, a.root.get_submodule(path) if path else a.root


def _head_attributes(mod: nn.Module) -> tuple[str, str] | None:
    kind = type(mod)
    return HEAD_ATTRIBUTES.get(kind) or HEAD_ATTRIBUTES.get(_qualified(kind))


def _count_follows(a: Analysis, node: torch.fx.Node, given: Any, which: int, var: int) -> bool:
    """Whether the size ``given`` in a reshape of heads follows the active width: ``-1``, or the value
    of the calling module's head-count (``which`` 0) or heads' channel (1) attribute, recorded."""
    if given == -1:
        return True
    path, mod = _owner(a, node)
    names = _head_attributes(mod)
    if not isinstance(given, int) or names is None or getattr(mod, names[which], None) != given:
        return False
    known = a.head_owners.setdefault(f"{a.prefix}{path}", (names, var))
    if a.groups.find(known[1]) != a.groups.find(var):
        a.groups.union(known[1], var)
    return True


def _visit_heads(a: Analysis, node: torch.fx.Node) -> bool:
    """Apply the rules of attention heads to ``node`` where they hold: a split of channels into heads, an
    op on a heads tensor, an element of a tuple whose elements share channels. Whether they did."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return False
    src = node.args[0] if node.args else None
    if node.target is operator.getitem and src in a.var and shape(src) is None and shape(node) is not None:
        a.var[node], a.axis[node] = a.var[src], a.axis[src]  # type: ignore[index]
        return True
    if not any(_unit(a, n) > 1 for n in node.all_input_nodes):
        return node.op != "call_module" and node.target in _RESHAPES and _split_heads(a, node)
    if node.op == "call_module":
        rule = module_rule(a.gm.get_submodule(str(node.target)))
        if rule is PASS:
            _pass(a, node, None)
        else:
            a.unsupported(node, "a module on attention heads that make_slimmable does not follow")
        return True
    target = node.target
    rule = METHOD_RULES.get(str(target)) if node.op == "call_method" else FUNCTION_RULES.get(target)
    if target in _PARTS:
        _head_parts(a, node)
    elif shape(node) is None:
        return False  # sizes and shapes
    elif target in _RESHAPES or target in _FLATTENS:
        _merge_heads(a, node)
    elif target in _SOFTMAX or rule is PASS:
        _pass(a, node, target)
    elif rule is _PERMUTE or rule is _ELEMENTWISE:
        rule.visit(a, node, target)
    elif target is F.scaled_dot_product_attention or target in _MATMUL:
        _head_matmuls(a, node)
    else:
        a.unsupported(node, "an op on attention heads that make_slimmable does not follow")
    return True


def _split_heads(a: Analysis, node: torch.fx.Node) -> bool:
    """A reshape of the channel axis into ``(H, D)`` (separate projections) or ``(3, H, D)`` (a fused q/k/v
    projection, whose output then reads as three blocks of one variable: the first heads of each of q, k
    and v). Whether ``node`` is one (handled, or pinned where its head count would not follow)."""
    src = node.args[0]
    inp, out, v, sizes = shape(src), shape(node), a.channels(src), _reshape_sizes(node)
    if inp is None or out is None or v is None or len(v) != 1 or sizes is None or len(sizes) != len(out):
        return False
    axis = a.channel_axis(src)
    before, after = math.prod(inp[:axis]), math.prod(inp[axis + 1 :])
    if after != 1:  # heads split channels on the last axis (tokens), never a map's (a channel shuffle)
        return False
    run = next(
        (
            (e0, e1)
            for e0 in range(1, len(out))  # after the batch, which may be 1
            for e1 in range(e0 + 1, min(e0 + 3, len(out)))
            if math.prod(out[:e0]) == before
            and math.prod(out[e0 : e1 + 1]) == inp[axis]
            and math.prod(out[e1 + 1 :]) == after
        ),
        None,
    )
    if run is None or out[run[1]] == 1 or sizes[run[1]] != out[run[1]]:
        return False
    first, last = run
    fused = last - first == 2
    if fused and out[first] != 3:
        return False
    heads_at, size = last - 1, out[last]
    if fused:
        name = f"{a.prefix}{src.target}" if isinstance(src, torch.fx.Node) else ""
        layer = a.layers.get(name) if src.op == "call_module" else None  # type: ignore[union-attr]
        if layer is None or layer.cout != v or len(src.users) != 1:  # type: ignore[union-attr]
            a.unsupported(node, "a split into q, k and v of channels no single projection makes")
            return True
        heads = a.groups.new(inp[axis] // 3)
        layer.cout = a.var[src] = (heads,) * 3  # type: ignore[index]
    else:
        heads = v[0]
    a.groups.require_step(heads, size)
    if not _count_follows(a, node, sizes[heads_at], 0, heads):
        a.unsupported(node, "a split into heads by a head count that no config changes; write -1 for it")
        return True
    path, _ = _owner(a, node)
    a.dim_names.setdefault(heads, f"{a.prefix}{path}.heads" if path else f"{node.name}.heads")
    a.var[node], a.axis[node] = (heads,), heads_at
    return True


def _head_parts(a: Analysis, node: torch.fx.Node) -> None:
    """Unbind, chunk or split along another axis than the heads' (q, k and v of a fused projection)."""
    src = node.args[0]
    given = node.args[2] if len(node.args) > 2 and node.target not in ("unbind", torch.unbind) else None
    dim = node.kwargs.get(
        "dim", node.args[1] if node.target in ("unbind", torch.unbind) and len(node.args) > 1 else given
    )
    dim = 0 if dim is None else dim
    inp, axis = shape(src), a.channel_axis(src)
    if inp is None or not isinstance(dim, int) or dim % len(inp) == axis:
        a.unsupported(node, "a split of attention heads along their axis")
        return
    gone = node.target in ("unbind", torch.unbind) and dim % len(inp) < axis
    a.var[node], a.axis[node] = a.var[src], axis - gone  # type: ignore[index]


def _merge_heads(a: Analysis, node: torch.fx.Node) -> None:
    """A reshape or flatten of the heads axis with the axes after it that hold a head's channels, back
    into ``H x D`` channels."""
    src = node.args[0]
    inp, out, axis, unit = shape(src), shape(node), a.channel_axis(src), _unit(a, src)
    v = a.var[src]  # type: ignore[index]
    sizes = _reshape_sizes(node) if node.target in _RESHAPES else None
    merged = next(
        (
            m
            for m in range(2, len(inp or ()) - axis + 1)
            if math.prod((inp or ())[axis + 1 : axis + m]) == unit
        ),
        None,
    )
    fits = (
        inp is not None
        and out is not None
        and merged is not None
        and out[:axis] == inp[:axis]
        and len(out) > axis
        and out[axis] == inp[axis] * unit
        and out[axis + 1 :] == inp[axis + merged :]
    )
    if fits and sizes is not None:
        fits = len(sizes) == len(out or ()) and _count_follows(a, node, sizes[axis], 1, v[0])
    elif fits and node.target in _FLATTENS:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        fits = bool(start == axis)
    if not fits:
        a.unsupported(node, "a reshape of attention heads other than back into their channels")
        return
    a.var[node], a.axis[node] = v, axis


def _head_matmuls(a: Analysis, node: torch.fx.Node) -> None:
    """``scaled_dot_product_attention(q, k, v)`` or a matmul of two heads tensors with their heads on one
    batch axis: the same heads (united), and MACs per channel of them (the counts torch's FLOP counter
    gives: two matmuls for attention)."""
    sdpa = node.target is F.scaled_dot_product_attention
    names = ("query", "key", "value") if sdpa else ("input", "other")
    operands = [
        *node.args[: len(names)],
        *(node.kwargs[k] for k in names[len(node.args) :] if k in node.kwargs),
    ]
    mask = node.kwargs.get("attn_mask", node.args[3] if sdpa and len(node.args) > 3 else None)
    shapes = [shape(t) for t in operands]
    axes = {a.channel_axis(t) for t in operands}
    out = shape(node)
    # A mask broadcasts over the heads: size 1 on their axis, or no such axis.
    masks = shape(mask) or ()
    over_heads = out is not None and len(axes) == 1 and len(masks) >= len(out) - min(axes)
    if (
        len(operands) != len(names)
        or out is None
        or any(s is None or len(s) != len(out) or _unit(a, t) == 1 for s, t in zip(shapes, operands))
        or len(axes) != 1
        or next(iter(axes)) >= len(out) - 2
        or (over_heads and masks[min(axes) - len(out)] != 1)
    ):
        a.unsupported(node, "attention matmuls of tensors whose heads do not line up")
        return
    a.axis[node] = axes.pop()
    a.couple(node, [a.channels(t) for t in operands], "attention")  # type: ignore[misc]
    if node not in a.var:
        return
    q, k = shapes[0], shapes[1]
    assert q is not None and k is not None
    # [..., M, K] x [..., K, P]; attention: q k^T, then by v.
    per_batch = q[-2] * k[-2] * (q[-1] + (shapes[2] or q)[-1]) if sdpa else q[-2] * q[-1] * k[-1]
    macs = math.prod(out[:-2]) * per_batch
    heads = a.var[node][0]
    size = a.sizes((heads,))[0]
    if macs % size:
        a.unsupported(node, "attention matmuls whose MACs do not follow its heads' channels")
        return
    a.head_macs.append((macs // size, heads))
