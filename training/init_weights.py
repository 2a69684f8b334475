"""Starting a run from weights the user already has: a state_dict loaded into the full-width model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pareco_runtime.fileformat import first_line

from .config import TrainingError

_HOW = "save it with torch.save(model.state_dict(), PATH) or safetensors.torch.save_file"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save``'d state_dict (``weights_only``: no code runs)."""
    source = Path(path)
    if not source.is_file():
        raise TrainingError(f"--init {source}: no such file; give a state_dict file ({_HOW})")
    try:
        if source.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(source)
        else:
            # The unpickler's own notes on a damaged file are noise: the error below says it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise TrainingError(f"--init {source}: not a readable state_dict ({first}); {_HOW}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise TrainingError(
            f"--init {source}: holds a {type(state).__name__}, not a state_dict (parameter names to tensors); {_HOW}"
        )
    return dict(state)


def load_initial_state(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load the state_dict at ``path`` into ``model``; every key and shape must match, else one-line TrainingError."""
    state = read_state_dict(path)
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    for keys, what in ((unknown, "unknown"), (missing, "missing")):
        if keys:
            raise TrainingError(
                f"--init {path}: {what} key '{keys[0]}' ({len(keys)} {what} in all) for --arch {arch}; "
                f"use a state_dict of this architecture"
            )
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise TrainingError(
                f"--init {path}: '{key}' has shape {tuple(tensor.shape)}, the model's is {tuple(own[key].shape)}; "
                f"use a state_dict of this architecture with as many classes as the data"
            )
    model.load_state_dict(state)
