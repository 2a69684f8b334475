"""Slicing: turn one config of a slimmable model into a standalone model that needs only torch."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from .models.base import SlimmableNet
from .ops import SlimChannelParameters, SlimHeadCount, _Slim
from .untrusted import first_line

# Packages a standalone model's generated code may import: torch, and the stdlib modules torch.fx's
# code generation itself refers to (math's inf/nan, operator for `+`, builtins for getattr).
_TORCH_ONLY = frozenset({"torch", "math", "operator", "_operator", "builtins"})


# What binding a module to a context sets on it (ops._Slim.bind, its cache): not the plain twin's.
_BINDING = frozenset(
    {"ctx", "in_slot", "out_slot", "in_parts", "out_parts", "_prefix", "_cache", "channel_dims"}
)


def _plain_copy(module: nn.Module) -> nn.Module:
    channel_parameters = isinstance(module, SlimChannelParameters)
    bound = channel_parameters or isinstance(module, SlimHeadCount)
    if isinstance(module, _Slim) and not bound:
        return module.to_plain()
    new = copy.copy(module)
    new.__dict__ = {k: v for k, v in module.__dict__.items() if not (bound and k in _BINDING)}
    if isinstance(module, SlimHeadCount):
        new.__class__ = module.plain_type
        new.__dict__.update(module.active_heads())
    new._parameters = {
        k: (None if p is None else nn.Parameter(p.detach().clone(), p.requires_grad))
        for k, p in module._parameters.items()
    }
    if isinstance(module, SlimChannelParameters):
        new.__class__ = module.plain_type
        new._parameters.update(module.plain_parameters())
    new._buffers = {k: (None if b is None else b.detach().clone()) for k, b in module._buffers.items()}
    new._modules = {k: (None if m is None else _plain_copy(m)) for k, m in module._modules.items()}
    return new


def _plain_model(model: SlimmableNet) -> nn.Module:
    """The active config as an instance of the architecture's plain class, in eval mode.

    Its layers hold copies of the active slices; for a converted model the class is the original's.
    """
    root = model.plain_class.__new__(model.plain_class)
    nn.Module.__init__(root)
    for name, child in model.named_children():
        setattr(root, name, _plain_copy(child))
    # The model's own tensors (a ViT's class token and position embedding), which no config narrows.
    for name, p in model._parameters.items():
        setattr(root, name, None if p is None else nn.Parameter(p.detach().clone(), p.requires_grad))
    for name, b in model._buffers.items():
        root.register_buffer(
            name, None if b is None else b.detach().clone(), name not in model._non_persistent_buffers_set
        )
    for name, value in model.plain_values().items():
        setattr(root, name, copy.deepcopy(value))
    return root.eval()


def _package(target: Any) -> str:
    module = getattr(target, "__module__", None) or type(target).__module__
    return str(module).partition(".")[0]


def _inline(graph: torch.fx.Graph, node: torch.fx.Node) -> None:
    """Replace a call of ``node.target`` by the torch ops its body runs, traced on the node's inputs.

    ``torch.fx.wrap`` keeps such functions (torchvision's ``stochastic_depth``) as one call, which a
    pickled model would import its package for. A body torch.fx cannot follow stays a call, with a warning.
    """
    fn: Any = node.target
    before = set(graph.nodes)
    tracer = torch.fx.proxy.GraphAppendingTracer(graph)

    def proxy(n: torch.fx.Node) -> Any:
        return torch.fx.Proxy(n, tracer)

    with graph.inserting_before(node):
        inputs: Any = torch.fx.node.map_arg((node.args, node.kwargs), proxy)
        args, kwargs = inputs
        try:
            out = fn(*args, **kwargs)
            if not isinstance(out, torch.fx.Proxy):
                raise TypeError(f"it returned {type(out).__name__}, not one tensor")
        except Exception as exc:
            for added in reversed([n for n in graph.nodes if n not in before]):
                graph.erase_node(added)
            warnings.warn(
                f"slice_model: {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)} stays a call "
                f"({first_line(exc)}), so loading a torch.save'd standalone model imports "
                f"{_package(fn)}; export it (TorchScript, ONNX, ExecuTorch) to run it without that package",
                stacklevel=4,
            )
            return
    node.replace_all_uses_with(out.node)
    graph.erase_node(node)


def _torch_graph(plain: nn.Module) -> torch.fx.GraphModule:
    """``plain`` traced by ``torch.fx`` into a GraphModule whose pickle imports torch alone.

    Its submodules are torch's layers (``nn.Conv2d``, ``nn.BatchNorm2d``, ...) under their original
    dotted names, joined by plain ``nn.Module`` containers; the forward is the generated code of the
    traced graph, which the pickle carries as source.
    """
    graph = torch.fx.Tracer().trace(plain)
    for node in list(graph.nodes):
        if node.op == "call_function" and _package(node.target) not in _TORCH_ONLY:
            _inline(graph, node)
    return torch.fx.GraphModule(plain, graph, class_name="StandaloneModel")


def plain_twin(
    model: SlimmableNet,
    alpha: Sequence[float] | None = None,
    bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """``model`` at config ``alpha`` as an instance of its architecture's plain class, in eval mode.

    The same layers and outputs as :func:`slice_model`, but blocks stay modules with their own forward
    (``twin.get_submodule("layer1.0")`` runs, can be hooked, timed or exported alone), which is what
    tools that work per block need. Unlike ``slice_model``'s result it is not torch-only: unpickling
    it imports pareco (or a converted model's own class). ``bn_stats`` as in :func:`slice_model`.
    """
    stats = model.ctx.bn_stats if bn_stats is None else bn_stats
    with model.config(alpha, stats, train=model.training), torch.no_grad():
        return _plain_model(model)


def slice_model(
    model: SlimmableNet,
    alpha: Sequence[float] | None = None,
    bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.fx.GraphModule:
    """A standalone copy of ``model`` at config ``alpha`` (the active one when None) that needs only torch.

    The result is a ``torch.fx.GraphModule`` of torch's own ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
    ``nn.Linear`` / activation layers, whose tensors are copies of the active slices: no masks, hooks
    or references to the slimmable model, and no class of pareco, torchvision, timm or the user's
    code, so a ``torch.save(sub)`` pickle loads where only torch is installed (a pickle runs code when
    loaded: load only files you made; to hand a model to someone else, export it). Submodules keep their dotted names (``sub.get_submodule("layer1.0.conv1")``) and
    ``sub.arch``, ``sub.alpha``, ``sub.channels``, ``sub.input_size`` describe the config. The forward
    is traced in eval mode: layers follow ``train()`` / ``eval()``, Python branches on
    ``self.training`` are those of eval. BatchNorm layers carry ``bn_stats`` when given (one
    ``(mean, var)`` per BN layer, as a front point stores them), else the context's per-point
    statistics if set, else the running buffers. In eval mode its outputs equal the slimmable
    model's at that config. The model is left exactly as it was (widths, statistics, mode);
    statistics that do not fit the config raise ``BNStatsError``.
    """
    twin = plain_twin(model, alpha, bn_stats)
    try:
        standalone = _torch_graph(twin)
    except Exception as exc:  # torch.fx fails in many types (TraceError, TypeError, ...)
        if not model.takes_batches:
            raise ValueError(
                f"slice_model: {type(twin).__name__} was converted in parts (make_slimmable(..., submodules=)) "
                "and torch.fx cannot trace it as a whole, so it has no standalone graph to save or export; "
                "serve its front in Python (SlimmableRuntime, torch backend), or take plain_twin(model, "
                "alpha), the network at that width as an instance of its own class"
            ) from None
        raise ValueError(
            f"slice_model: torch.fx cannot trace {type(twin).__name__} as a whole ({first_line(exc)}); "
            "plain_twin(model, alpha) gives the same network as an instance of its own class"
        ) from None
    with model.config(alpha):
        described = {
            "arch": model.arch,
            "alpha": list(model.alpha),
            "channels": model.channels(),
            "input_size": model.input_size,
        }
        if len(model.input_sizes) > 1:
            described["input_sizes"] = model.input_sizes
    # setattr: torch types nn.Module attribute assignment as tensors and modules only.
    for name, value in described.items():
        setattr(standalone, name, value)
    return standalone.train(model.training)
