"""``.pt2``: a ``torch.export`` program with a dynamic batch, loaded with ``torch.export.load``."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import ExportError, Format, Runner, batch_dim, save_via_memory, torch_runner

if TYPE_CHECKING:
    import torch
    from torch import nn


def write_pt2(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """``torch.export.export`` with a dynamic batch, saved with ``torch.export.save``; ``metadata`` as extra files."""
    import torch

    program = torch.export.export(model, example, dynamic_shapes=batch_dim(model, batch, len(example)))
    save_via_memory(lambda f: torch.export.save(program, f, extra_files=dict(metadata)), path)
    return {}


def load_pt2(path: Path, threads: int | None) -> Runner:
    """The program's module; ``threads`` sets ``torch.set_num_threads`` (process-wide)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if not zipfile.is_zipfile(path):  # torch.export.load would log a traceback before failing
        raise ExportError(f"{path}: not a .pt2 archive; export it again with `pareco export --pt2`")
    return torch_runner("pt2", path, torch.export.load(str(path)).module())


FORMAT = Format(
    name="pt2",
    title=".pt2",
    ext=".pt2",
    dynamic_batch=True,
    write=write_pt2,
    load=load_pt2,
    flag_help="torch.export program, .pt2 (dynamic batch).",
)
