"""The export formats, one module each, and the registry the rest of pareco asks about them.

Export (:mod:`export.exporter`), int8 (:mod:`export.int8`), the runtime's compiled backends
(:mod:`export.serving`), ``pareco bench`` (:mod:`bench.run`, :mod:`bench.lut`, :mod:`bench.device`)
and the CLI read a format's facts here (:class:`~export.formats.base.Format`: extension, batch
capability, packages and extra, serving backend, writer, loader, profile runtime text, thread pool,
int8 flow); no other module names a format. Exporters write exactly one file at a path they are
given (staging and the atomic move into place are :func:`export.exporter.export_point`'s); runners
load a file in the runtime that will run it on a device, for parity checks and ``pareco bench``.

Adding a format (Core ML, TensorRT, ...):

1. Write ``export/formats/<name>.py`` declaring ``FORMAT = Format(...)``: its writer and loader
   (importing the format's packages inside the functions, so that the registry stays importable
   without them), the modules writing and running need with the hint naming the extra, and, when
   ``pareco bench --backend`` and ``SlimmableRuntime.load(..., backend=...)`` should run its files,
   a :class:`~export.formats.base.Serving` (and an :class:`~export.formats.base.Int8Flow` when it
   has an int8 flow).
2. Add the module to :data:`FORMATS` below.
3. Add its packages to an extra of ``pyproject.toml``; for a served format, add the backend to
   the ``pareco.backends`` entry points with the extras its ``Serving`` names.
4. Add its parity test (export a point, load it back, compare with PyTorch), as
   ``tests/test_export.py`` does for the others. ``tests/test_format_registry.py`` checks the
   rest: every field declared, the entry points matching, no format named outside this package.

Its ``pareco export --<name>`` flag is made from the record (``Format.flag_help``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path

from . import executorch, litert, onnx, openvino, pt2, torchscript
from .base import Calibration, ExportError, Format, MissingDependencyError, Runner, Serving
from .executorch import BATCH_METHODS, constant_method, set_executorch_threads
from .torchscript import quiet_torchscript

FORMATS: dict[str, Format] = {
    m.FORMAT.name: m.FORMAT for m in (onnx, torchscript, pt2, executorch, litert, openvino)
}

# The compiled backends (``pareco bench --backend``, ``SlimmableRuntime.load(..., backend=)``) and
# the format each runs.
SERVED: dict[str, Format] = {f.serving.backend: f for f in FORMATS.values() if f.serving is not None}


def get_format(name: str) -> Format:
    """The :class:`Format` called ``name`` (ExportError listing the formats if unknown)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format '{name}'; choose one of {', '.join(FORMATS)}") from None


def served_format(backend: str) -> Format:
    """The format whose files the compiled backend ``backend`` runs (ExportError if none does)."""
    try:
        return SERVED[backend]
    except KeyError:
        raise ExportError(
            f"backend '{backend}' runs no exported format; choose one of {', '.join(SERVED)}"
        ) from None


def serving(backend: str) -> Serving:
    """How the compiled backend ``backend`` runs its format's files (ExportError if it runs none)."""
    spec = served_format(backend).serving
    assert spec is not None  # SERVED holds only formats with a serving backend
    return spec


def served_backend(fmt: str) -> str:
    """The compiled backend that runs files of format ``fmt`` (ExportError if none does)."""
    serving = get_format(fmt).serving
    if serving is None:
        raise ExportError(
            f"no backend runs {fmt} files; choose one of {', '.join(f.name for f in SERVED.values())}"
        )
    return serving.backend


def require_backend(backend: str) -> None:
    """:class:`MissingDependencyError` naming the pip install of the extras serving needs unless
    the compiled backend ``backend`` can export and run its format's files here."""
    spec = served_format(backend)
    extras = ",".join(serving(backend).extras)
    with spec.quiet():
        for name in spec.export_modules:
            try:
                importlib.import_module(name)
            except ImportError:
                raise MissingDependencyError(
                    f"backend '{backend}' needs {name.split('.')[0]}, which is not installed here; "
                    f"run: pip install 'pareco[{extras}]'"
                ) from None


def require(fmt: str, for_export: bool = True) -> None:
    """Check that the packages ``fmt`` needs can be imported, else :class:`MissingDependencyError`.

    ``for_export=False`` checks only what loading and running a file needs.
    """
    get_format(fmt).require(for_export)


def versions(fmt: str) -> dict[str, str]:
    """Installed versions of the distributions a file of format ``fmt`` depends on."""
    out = {}
    for dist in get_format(fmt).packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def load_runner(fmt: str, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
    """Load an exported file in its own runtime and return a :class:`Runner`.

    ``threads``: intra-op threads of onnxruntime, the ExecuTorch thread pool, or (TorchScript,
    ``.pt2``) ``torch.set_num_threads``, which is process-wide; None leaves the runtime's default.
    Raises :class:`ExportError` when the file cannot be loaded, :class:`MissingDependencyError`
    when its runtime is not installed.
    """
    spec = get_format(fmt)
    spec.require(for_export=False)
    source = Path(path)
    if not source.is_file():
        raise ExportError(f"{source}: no such exported file; run `pareco export` first")
    try:
        return spec.load(source, threads)
    except ExportError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ExportError(
            f"{source}: cannot load as {fmt} ({text[0] if text else type(exc).__name__}); "
            "export it again with this version of pareco"
        ) from None


def int8_formats() -> list[Format]:
    """The formats with an int8 flow."""
    return [f for f in FORMATS.values() if f.int8 is not None]


def check_int8_formats(formats: Sequence[str]) -> None:
    """ExportError unless every format of ``formats`` has an int8 flow."""
    other = [f for f in formats if get_format(f).int8 is None]
    if other:
        titles = [f.title for f in int8_formats()]
        names = " and ".join([", ".join(titles[:-1]), titles[-1]] if len(titles) > 1 else titles)
        raise ExportError(
            f"--int8 makes {names} programs, not {', '.join(other)}; export those in another run"
        )


def int8_name(point: str, fmt: str) -> str:
    """The file name of ``point``'s int8 program in ``fmt``: ``p03.int8.pte``."""
    return f"{point}.int8{get_format(fmt).ext}"


def module_extras() -> dict[str, str]:
    """Top-level module -> the pareco extra installing it, for every module a format imports."""
    return {
        module.split(".")[0]: f.extra
        for f in FORMATS.values()
        if f.extra is not None
        for module in (*f.export_modules, *f.run_modules)
    }


__all__ = [
    "BATCH_METHODS",
    "FORMATS",
    "SERVED",
    "Calibration",
    "ExportError",
    "Format",
    "MissingDependencyError",
    "Runner",
    "Serving",
    "check_int8_formats",
    "constant_method",
    "get_format",
    "int8_formats",
    "int8_name",
    "load_runner",
    "module_extras",
    "quiet_torchscript",
    "require",
    "require_backend",
    "served_backend",
    "served_format",
    "serving",
    "set_executorch_threads",
    "versions",
]
