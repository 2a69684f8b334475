"""TorchScript: the traced model saved as ``.pt``, any batch, loaded with ``torch.jit.load``."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import Format, Runner, save_via_memory, torch_runner

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence TorchScript's deprecation warnings and the tracer's shape warnings from pareco's models.

    TorchScript is deprecated upstream but still asked for; its FutureWarnings carry no action for
    a pareco user. The models' option-A shortcut compares channel counts in Python while tracing:
    a sliced model's channel counts are fixed, so the recorded constant is right.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"pareco_runtime\.")
        yield


def write_torchscript(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Trace and save as TorchScript (the plain traced module: never ``optimize_for_inference``'s output,
    which bakes in CPU-specific ops and does not load everywhere); ``metadata`` as extra files."""
    import torch

    with quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False)
        save_via_memory(lambda f: torch.jit.save(traced, f, _extra_files=dict(metadata)), path)
    return {}


def load_torchscript(path: Path, threads: int | None) -> Runner:
    """``torch.jit.load`` on the CPU; ``threads`` sets ``torch.set_num_threads`` (process-wide)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu")
    return torch_runner("torchscript", path, module.eval())


FORMAT = Format(
    name="torchscript",
    title="TorchScript",
    ext=".pt",
    dynamic_batch=True,
    write=write_torchscript,
    load=load_torchscript,
    flag_help="TorchScript (traced), .pt.",
)
