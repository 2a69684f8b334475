"""Front points served by a compiled runtime: the programs behind ``SlimmableRuntime.load(..., backend=B)``.

``load_program`` is registered as the ``onnxruntime`` and ``executorch`` entries of the
``pareco.backends`` entry-point group (``pyproject.toml``), which is how the runtime finds it without
importing this package. A point's program is the file of an earlier ``pareco export`` (the ``export/``
folder beside the manifest) or of an earlier first use (the cache folder ``<name>.programs/`` beside
it), used only when its ``export.json`` record names the same weight file (SHA-256), point id and
channel counts; otherwise the point is exported into the cache folder (checked against PyTorch and
moved into place atomically, as every export is) and that file is used. Of several usable files the
one accepting the widest batch range is taken.

A recorded file is used only if it is the file its record names (:func:`export.index.recorded_exports`:
its SHA-256, and the point and weight file it carries): one that is not is a one-line
:class:`~export.formats.ExportError` naming it, not re-exported over, since a program changed after
export is something its owner must hear about (a re-export would hide it at every load). A folder
the user cannot write serves the programs already there; a point with none is a one-line error.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .formats import ExportError, Format, Runner, load_runner, require_backend, served_format
from .index import recorded_exports

if TYPE_CHECKING:
    from pareco_runtime import FrontPoint, SlimmableRuntime

    from .batch import BatchRange

# An ExecuTorch program plans its memory for its batch range: the cache's programs take 1 to 8 (a
# range the parity check runs at 1, 3 and 8; larger bounds failed for some models), ONNX files any batch.
CACHE_BATCH = "dynamic:8"
EXPORT_DIR = "export"


def cache_dir(manifest: Path) -> Path:
    """The folder beside ``manifest`` (``NAME.front.json``) that programs exported on first use go to."""
    stem = manifest.name.removesuffix(".front.json")
    return manifest.with_name(f"{stem}.programs")


class ServedProgram:
    """One point's program loaded in its runtime: takes and returns torch tensors.

    A file whose runtime is not concurrent (an ExecuTorch method runs in memory planned once) has its
    calls serialised and each output copied out before the next call can overwrite it; a concurrent
    one (an ONNX Runtime session) is run from several threads at once and returns fresh arrays.
    """

    def __init__(self, runner: Runner, fmt: Format) -> None:
        self.runner = runner
        self.path = runner.path
        concurrent = fmt.serving is not None and fmt.serving.concurrent
        self._lock: threading.Lock | None = None if concurrent else threading.Lock()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        import numpy as np

        if self._lock is None:
            return torch.from_numpy(self.runner(*inputs))
        with self._lock:
            return torch.from_numpy(np.array(self.runner(*inputs), copy=True))


def usable_export(rt: SlimmableRuntime, point: FrontPoint, fmt: str, folders: list[Path]) -> Path | None:
    """The recorded file of ``point`` as ``fmt`` in ``folders`` from ``rt``'s weight file and with the
    point's channels, accepting the widest batch range; None when there is none."""
    found = [
        (path, batches)
        for folder in folders
        for path, batches in recorded_exports(
            folder, point.id, fmt, rt.front.weights_sha256, channels=point.channels
        )
    ]
    if not found:
        return None
    return max(found, key=lambda f: _widest_batch(f[1]))[0]


def _widest_batch(batches: BatchRange | None) -> float:
    """The largest batch a recorded range accepts, for ranking: infinite for an unbounded range, -1
    for a file recorded without one."""
    if batches is None:
        return -1
    return math.inf if batches.high is None else batches.high


def load_program(
    rt: SlimmableRuntime, point: FrontPoint, backend: str, threads: int | None
) -> Callable[..., torch.Tensor]:
    """``point``'s program for the compiled ``backend`` (:data:`export.formats.SERVED`), found or
    exported on first use (see the module docstring); ``threads``: the runtime's intra-op threads
    (None: its default). :class:`~export.formats.MissingDependencyError` naming the extras to
    install when the backend's packages are missing."""
    require_backend(backend)
    spec = served_format(backend)
    fmt = spec.name
    manifest = rt.manifest_path
    if manifest is None:
        raise ValueError(
            f"backend {backend}: the front has no manifest file to find or cache its programs beside; "
            "load it with SlimmableRuntime.load(path)"
        )
    cache = cache_dir(manifest)
    path = usable_export(rt, point, fmt, [manifest.parent / EXPORT_DIR, cache])
    if path is None:
        # Imported here: the runtime loads this module through its entry point in installs without
        # the export extra, where require_backend, not an ImportError of NumPy, must say what to install.
        from .exporter import export_points

        batch = spec.serving.cache_batch if spec.serving and spec.serving.cache_batch else CACHE_BATCH
        try:
            (result,) = export_points(rt, [point], [fmt], cache, batch=batch)
        except OSError as exc:
            if exc.errno is None:  # LockTimeout: its message is already one line
                raise
            raise ExportError(
                f"{cache}: cannot export point {point.id}'s {spec.title} program there on first use "
                f"({exc.strerror}); make {manifest.parent} writable once, or run `pareco export "
                f"{manifest} --all --{fmt}` into its export/ folder where it is writable"
            ) from None
        path = result.path
    return ServedProgram(load_runner(fmt, path, threads), spec)
