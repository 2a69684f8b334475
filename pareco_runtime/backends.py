"""Which runtime serves a front's points: PyTorch eager here, or a compiled runtime found by entry point.

The compiled backends (ONNX Runtime, ExecuTorch) serve each point from its exported program, and
exporting needs the ``export`` package, which the runtime does not import (it stays torch +
safetensors). They are found through the ``pareco.backends`` entry-point group instead: each entry
names a ``load_program(rt, point, backend, threads)`` returning the point's program, a callable from
an input batch to its logits (pareco registers ``export.serving:load_program`` for both, which
names the extras to install when a backend's packages are missing).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manifest import FrontPoint

TORCH = "torch"
GROUP = "pareco.backends"
Program = Callable[..., Any]  # a batch of each input -> the output
ProgramLoader = Callable[[Any, "FrontPoint", str, "int | None"], Program]


def available() -> list[str]:
    """The backends this installation can serve points on, torch first."""
    return [TORCH, *sorted({e.name for e in entry_points(group=GROUP)})]


def program_loader(backend: str) -> ProgramLoader:
    """The loader of points' programs for ``backend``; ValueError naming the backends to choose from."""
    found = [e for e in entry_points(group=GROUP) if e.name == backend]
    if not found:
        raise ValueError(
            f"backend '{backend}' is not available here (available: {', '.join(available())}); "
            "choose one of them"
        )
    loader: ProgramLoader = found[0].load()
    return loader
