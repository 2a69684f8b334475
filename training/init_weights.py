"""Starting a run from weights the user already has: a state_dict loaded into the full-width model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pareco_runtime.untrusted import first_line

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


def load_initial_state(model: nn.Module, path: str | Path, arch: str, num_classes: int | None = None) -> None:
    """Load the state_dict at ``path`` into ``model``; every key and shape must match, else one-line TrainingError.

    The one exception is the classifier of a checkpoint trained for another class count (ImageNet's
    1000 for a 10-class dataset, the usual start): tensors whose first dimension is the class count
    in ``model`` and another count in the file, the rest of the shape equal, keep ``model``'s fresh
    initialisation, with a warning naming them.
    """
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
    reheaded = []
    for key, tensor in state.items():
        mine = own[key].shape
        if tensor.shape == mine:
            continue
        if _is_head(tensor.shape, mine, num_classes):
            reheaded.append(key)
            continue
        raise TrainingError(
            f"--init {path}: '{key}' has shape {tuple(tensor.shape)}, the model's is {tuple(mine)}; "
            f"use a state_dict of this architecture"
        )
    if reheaded:
        warnings.warn(
            f"--init {path}: {', '.join(reheaded)} hold {state[reheaded[0]].shape[0]} classes, the data "
            f"{num_classes}; the classifier starts fresh, the rest from the file",
            stacklevel=2,
        )
        for key in reheaded:
            state[key] = own[key]
    model.load_state_dict(state)


def _is_head(theirs: torch.Size, mine: torch.Size, num_classes: int | None) -> bool:
    return (
        num_classes is not None
        and len(theirs) == len(mine) >= 1
        and mine[0] == num_classes != theirs[0]
        and theirs[1:] == mine[1:]
    )
