"""A network's outputs flattened in one documented order, as exported files return them.

A network may return one tensor, or tuples, lists and dicts of tensors (a segmentation model's
``{"out": ...}``, a detection head's ``{"bbox_regression": ..., "cls_logits": ...}``). Exported files
return a flat sequence of tensors instead, in this order: dict values in key insertion order,
tuple and list items in order, nested containers depth-first. Each output is named by its path:
the dict key or the item index, nested levels joined by ``.`` (``out``, ``0``, ``aux.1``); a lone
tensor is named ``output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def flatten_outputs(out: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every tensor in ``out``, in the order above; ``ValueError`` for anything
    else in it (a network whose outputs are not tensors cannot be exported)."""
    if isinstance(out, torch.Tensor):
        return [(prefix or "output", out)]
    if isinstance(out, dict):
        items = [(str(k), v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        raise ValueError(
            f"output {prefix or 'of the network'} is a {type(out).__name__}; export networks whose outputs "
            "are tensors, or tuples, lists and dicts of tensors"
        )
    flat = [
        pair for key, value in items for pair in flatten_outputs(value, f"{prefix}.{key}" if prefix else key)
    ]
    if not flat:
        raise ValueError(f"output {prefix or 'of the network'} holds no tensor; export networks with outputs")
    return flat


def unflatten_outputs(flat: Sequence[torch.Tensor], like: Any) -> Any:
    """``flat`` (tensors in the order above, as an exported file returns them) in the structure of
    ``like``, an output of the same network: the inverse of :func:`flatten_outputs` (tuples come back
    as plain tuples). ``ValueError`` when the counts differ."""
    wanted = len(flatten_outputs(like))
    if len(flat) != wanted:
        raise ValueError(f"{len(flat)} outputs given for a network that returns {wanted}")
    items = iter(flat)

    def build(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            return next(items)
        if isinstance(node, dict):
            return {k: build(v) for k, v in node.items()}
        built = [build(v) for v in node]
        return built if isinstance(node, list) else tuple(built)

    return build(like)


def output_names(out: Any) -> list[str]:
    """The names of ``out``'s tensors in the flattened order (``["output"]`` for a lone tensor)."""
    return [name for name, _ in flatten_outputs(out)]


class FlatOutputs(nn.Module):
    """``model`` returning its outputs as a flat tuple of tensors in the order above; ``output_names``
    holds their names (what the ONNX writer names the graph's outputs)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = list(names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # torch.export takes the dynamic shapes of *inputs nested one level (export.formats.batch_dim).
        return tuple(t for _, t in flatten_outputs(self.model(*inputs)))


def with_flat_outputs(model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
    """``model`` itself when it returns one tensor for the inputs ``example`` (files stay as before),
    else :class:`FlatOutputs` of it."""
    with torch.no_grad():
        out = model(*example)
    return model if isinstance(out, torch.Tensor) else FlatOutputs(model, output_names(out)).eval()
