"""Per-epoch checkpoints, written atomically and read without unpickling arbitrary objects."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pareco_runtime.atomic import atomic_write_bytes
from pareco_runtime.untrusted import first_line

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do about it."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    # Serialised in memory first: torch's C++ writer fails on a full disk with a RuntimeError that names
    # no file, a Python write with an OSError the CLI reports as "no space left" in one line.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a file that would run code is refused."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from; run without --resume to start afresh")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on damage
        first = first_line(exc)
        raise CheckpointError(
            f"{path}: not a usable checkpoint ({first}); delete it and pass --force to start afresh"
        ) from None
