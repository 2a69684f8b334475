"""Any traceable CNN becomes slimmable: channel groups derived from its ``torch.fx`` graph.

:func:`make_slimmable` traces a module, propagates the shapes of an example input, and unites the
channel dimensions that must keep one width: the operands of an add or a mul (residuals,
squeeze-excitation gates), a depthwise or grouped conv's input and output (in whole groups), everything a
BatchNorm, an activation, a pooling or a flatten passes through (a map flattened into a Linear: each
channel its H*W features). Channels lie in dimension 1 unless a permute moves them (ConvNeXt's channels-last blocks): a Linear on the channel
axis, a LayerNorm over it and a module's per-channel parameters (a layer scale) follow them. Each
group that a conv or linear layer produces becomes one width dimension; the input's channels, the
network's outputs, and whatever an unsupported op touches stay at full width (each op's rule is one
entry of the tables in :mod:`pareco_runtime.coupling`). Conv2d, BatchNorm2d, Linear and LayerNorm
layers are then swapped for the slimmable ops of :mod:`pareco_runtime.ops`, reading one
:class:`~pareco_runtime.ops.SlimContext`, and the result is a :class:`SlimmableNet` whose
``forward`` is the original class's own: at full width its ``state_dict`` keys, shapes and outputs
are the original's.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import _pytree as pytree

from .coupling import Analysis, ConversionError, Groups, Layer, Tracer
from .inputs import DTYPES, FLOAT, dtype_name
from .models.base import LayerBuilder, SlimmableNet, Slot
from .ops import SlimChannelParameters, SlimHeadCount, channel_parameters_class, head_count_class
from .sources import ModelFactory, check_builder_kwargs, original_module
from .untrusted import first_line

# What make_slimmable records under architecture.kwargs.convert, and all a manifest may pass it back.
CONVERT_SETTINGS = frozenset(
    {
        "input_size",
        "input_sizes",
        "input_dtypes",
        "low",
        "lows",
        "divisor",
        "pin",
        "tie",
        "on_unsupported",
        "slim_grouped",
        "submodules",
        "input_tree",
    }
)
# Normalisers share their input's channel group: a tie names the layers that produce one.
_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
# What a SlimmableNet made by make_slimmable sets on itself: an original attribute of one of these
# names, or of a class member of TracedSlimmableNet, would hide that member or be overwritten.
_INSTANCE_API = frozenset(
    {
        "arch",
        "arch_kwargs",
        "space",
        "input_size",
        "input_sizes",
        "input_dtypes",
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


def _matching(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _placed(twin: nn.Module | None, mod: nn.Module) -> nn.Module | None:
    """``mod``'s slimmable ``twin`` holding its parameters and buffers (same device, dtype and mode)."""
    if twin is None:
        return None
    reference = next(mod.parameters(), None)  # none for a LayerNorm without affine parameters
    if reference is not None:
        twin = twin.to(device=reference.device, dtype=reference.dtype)
    twin.load_state_dict(mod.state_dict())
    twin.train(mod.training)
    return twin


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
    slim_grouped: bool = True,
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
    ``slim_grouped``: a grouped conv with as many input as output channels (ResNeXt's, RegNet's) joins
    its input's and output's widths into one dimension that slims in whole groups (the space's channel
    step is its channels per group); False keeps such convs, depthwise ones aside, at full width.
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
    dtypes = [FLOAT] * len(sizes) if submodules else _input_dtypes(inputs)
    groups, layers, unsupported = Groups(), dict[str, Layer](), list[str]()
    channel_params: dict[str, dict[str, tuple[int, int]]] = {}
    head_macs: list[tuple[int, int]] = []
    head_owners: dict[str, tuple[tuple[str, str], int]] = {}
    dim_names: dict[int, str] = {}
    for part, (part_module, args) in parts.items():
        gm = _traced(part_module, args, part or type(module).__name__)
        analysis = Analysis(gm, on_unsupported, groups, layers, unsupported, part, slim_grouped, part_module)
        channel_params.update(analysis.channel_params)
        head_macs += analysis.head_macs
        head_owners.update(analysis.head_owners)
        dim_names.update(analysis.dim_names)
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
    for v, dim_name in dim_names.items():  # attention heads: named by their module
        names.setdefault(groups.find(v), dim_name)
    for dim_name, patterns in (tie or {}).items():
        matched = _matching(
            [n for n, la in layers.items() if not isinstance(la.module, _NORMS) and len(la.cout) == 1],
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
                slots[root] = builder.dim(names.get(root, layer.name), groups.size[root], groups.step[root])
    if not builder.dim_names:
        raise ConversionError(
            f"make_slimmable: every channel group of {type(module).__name__} is pinned, nothing to slim "
            f"(first: {unsupported[0] if unsupported else 'pin patterns'}); slim a CNN built from "
            f"Conv2d/BatchNorm2d/Linear"
        )

    for layer in layers.values():
        # A side that reads a concatenation binds one slot per block.
        cin, cout = ([slots[groups.find(v)] for v in side] for side in (layer.cin, layer.cout))
        twin = _placed(layer.twin(layer.module), layer.module)
        if twin is None:
            continue  # the layer stays as it is (its channels are pinned)
        if layer.in_span != 1:  # a Linear reading a flattened map
            object.__setattr__(twin, "in_span", layer.in_span)
        parent, _, child = layer.name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, twin)
        builder.bind(twin, cin, cout)  # type: ignore[arg-type]
    _bind_channel_parameters(net, channel_params, groups, slots, builder)
    _bind_head_counts(net, head_owners, groups, slots, builder)
    op_macs = [(coef, slots[groups.find(v)]) for coef, v in head_macs if groups.find(v) in slots]

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
    if slim_grouped and any(_is_grouped(la.module) for la in layers.values()):
        # Recorded only where it matters: a manifest without it was made when grouped convs kept their
        # channels, and rebuilds that space.
        slim.arch_kwargs["convert"]["slim_grouped"] = True
    if lows:
        slim.arch_kwargs["convert"]["lows"] = {k: float(v) for k, v in lows.items()}
    if len(sizes) > 1:
        slim.arch_kwargs["convert"]["input_sizes"] = [list(size) for size in sizes]
    if any(d != FLOAT for d in dtypes):
        slim.arch_kwargs["convert"]["input_dtypes"] = dtypes
    if submodules:
        slim.arch_kwargs["convert"]["submodules"] = list(submodules)
        tree = _input_tree(inputs)
        if tree is not None:  # else the front cannot be rebuilt, and rebuild() says why
            slim.arch_kwargs["convert"]["input_tree"] = tree
    slim.pinned = {
        layer.name: next(groups.pinned[groups.find(v)] for v in layer.cout if groups.is_pinned(v))
        for layer in layers.values()
        if any(groups.is_pinned(v) for v in layer.cout)
    }
    floors = _dimension_lows(builder.dim_names, low, lows or {})
    example = inputs if submodules else None
    slim._finish(builder, low, divisor, sizes[0], floors, sizes, example, op_macs, dtypes)
    return slim


def _bind_channel_parameters(
    net: nn.Module,
    channel_params: Mapping[str, Mapping[str, tuple[int, int]]],
    groups: Groups,
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


def _bind_head_counts(
    net: nn.Module,
    owners: Mapping[str, tuple[tuple[str, str], int]],
    groups: Groups,
    slots: Mapping[int, Slot],
    builder: LayerBuilder,
) -> None:
    """Give each attention module whose head count its attributes hold (timm's ``num_heads``) and whose
    heads are a width dimension the subclass of its class whose attributes read the active heads."""
    for owner, (attributes, v) in owners.items():
        slot = slots.get(groups.find(v))
        if slot is None or slot.kind != "dim":
            continue  # no config changes its heads
        holder = net.get_submodule(owner)
        holder.__class__ = head_count_class(type(holder), attributes)
        assert isinstance(holder, SlimHeadCount)
        builder.bind(holder, slot, slot)


def _is_grouped(mod: nn.Module) -> bool:
    """A conv of groups that are not single channels (depthwise convs slimmed before ``slim_grouped``)."""
    return isinstance(mod, (nn.Conv1d, nn.Conv2d)) and 1 < mod.groups < mod.in_channels


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


def _input_tree(inputs: tuple[Any, ...]) -> str | None:
    """The nesting of a partial conversion's example (a tuple holding a list of images, ...) as
    ``torch.utils._pytree``'s JSON, from which :func:`rebuild` makes zeros of the recorded sizes; None
    when the example holds anything but tensors (nothing to rebuild it from)."""
    leaves, spec = pytree.tree_flatten(inputs)
    return pytree.treespec_dumps(spec) if all(isinstance(t, torch.Tensor) for t in leaves) else None


def _rebuilt_example(tree: Any, sizes: list[Any]) -> tuple[Any, ...]:
    """A partial conversion's example again: zeros of ``sizes`` nested as ``tree`` (:func:`_input_tree`)."""
    where = "architecture.kwargs.convert.input_tree"
    if tree is None:
        raise ValueError(
            f"{where} is missing: the model was converted in parts on an example holding more than tensors, "
            "which a manifest cannot rebuild; convert it on an example of tensors only"
        )
    try:
        spec = pytree.treespec_loads(tree)
    except Exception as exc:  # TypeError, ValueError, KeyError, JSONDecodeError: an edited manifest
        raise ValueError(
            f"{where}: not a nesting pareco wrote ({first_line(exc)}); use the manifest pareco wrote"
        ) from None
    if spec.num_leaves != len(sizes):
        raise ValueError(
            f"{where} holds {spec.num_leaves} tensors but {len(sizes)} input sizes are recorded; use the "
            "manifest pareco wrote"
        )
    return pytree.tree_unflatten([torch.zeros(*size) for size in sizes], spec)


def _input_dtypes(inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """Each input's dtype name: float32 for float inputs, int32/int64 for token ids; ConversionError else."""
    try:
        return [dtype_name(t.dtype, f"make_slimmable: example_input[{i}]") for i, t in enumerate(inputs)]
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


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
        gm = torch.fx.GraphModule(module, Tracer().trace(module, concrete_args=concrete or None))
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


def _check_own_tensors(net: nn.Module, layers: Mapping[str, Layer]) -> None:
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
    settings.setdefault("slim_grouped", False)
    sizes = [settings.pop("input_size")]
    sizes = settings.pop("input_sizes", sizes)
    dtypes = settings.pop("input_dtypes", [FLOAT] * len(sizes))
    if not isinstance(dtypes, list) or len(dtypes) != len(sizes) or any(d not in DTYPES for d in dtypes):
        raise ValueError(
            f"architecture.kwargs.convert.input_dtypes: {dtypes!r} is not one of {', '.join(DTYPES)} per "
            "input; use the manifest pareco wrote"
        )
    tree = settings.pop("input_tree", None)
    module = original_module(arch, dict(kwargs["model"]), factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if settings.get("submodules"):
                if torch.get_default_device().type == "meta":
                    # Finding what each part receives runs the whole model (a detector's transform
                    # and anchors make CPU tensors), so it is built for real: model_check's way for
                    # builders that compute with tensors.
                    raise RuntimeError("a model converted in parts is rebuilt on real tensors")
                example: Any = _rebuilt_example(tree, sizes)
            else:
                whole = tuple(torch.zeros(1, *size, dtype=DTYPES[d]) for size, d in zip(sizes, dtypes))
                example = whole if len(whole) > 1 else whole[0]
            return make_slimmable(
                module,
                example,
                arch=arch,
                model_kwargs=kwargs["model"],
                **settings,
            )
        except TypeError as exc:  # a setting of the wrong type: the manifest was edited
            raise ValueError(f"architecture.kwargs.convert: {exc}; use the manifest pareco wrote") from None
