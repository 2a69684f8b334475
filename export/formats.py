"""The four export formats: how each is written, and how each file is loaded back and run.

Every exporter here writes exactly one file at a path it is given; staging in a temporary folder
and the atomic move into place are done by :func:`export.exporter.export_point`. Runners load a
file in the runtime that will run it on a device (onnxruntime, TorchScript, ``torch.export``,
ExecuTorch) and run batches through it, both for parity checks and for ``pareco bench``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import logging
import os
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pareco_runtime.untrusted import first_line

from .batch import BatchRange


class ExportError(ValueError):
    """An export or a parity check failed; the message is one line naming the file and what to do."""


class MissingDependencyError(ExportError):
    """A package a format needs is not installed; the message says what to install."""


@dataclass(frozen=True)
class Format:
    """One export format: its file extension, whether the batch dimension stays dynamic, and the
    distributions whose versions are recorded with each file."""

    name: str
    ext: str
    dynamic_batch: bool
    packages: tuple[str, ...]


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", True, ("torch", "onnx", "onnxscript", "onnxruntime")),
    "torchscript": Format("torchscript", ".pt", True, ("torch",)),
    "pt2": Format("pt2", ".pt2", True, ("torch",)),
    # ExecuTorch plans memory for fixed shapes: a .pte file runs one batch size, the one it was exported for.
    "executorch": Format("executorch", ".pte", False, ("torch", "executorch")),
}

# Constant methods of every .pte pareco writes: the smallest and largest batch its forward accepts.
BATCH_METHODS = ("pareco_batch_low", "pareco_batch_high")

# The smallest opset the ONNX files use (the torch.export-based exporter emits 18 or newer).
MIN_OPSET = 18

_ONNX_HINT = (
    "ONNX export needs onnx, onnxscript and onnxruntime, the export extra: pip install 'pareco[export]'"
)
_ORT_HINT = "running ONNX files needs onnxruntime, the export extra: pip install 'pareco[export]'"
_MOBILE_HINT = "ExecuTorch export needs the mobile extra: pip install 'pareco[mobile]'"
_MOBILE_RUN_HINT = "running ExecuTorch files needs the mobile extra: pip install 'pareco[mobile]'"


def constant_method(key: str) -> str:
    """The constant method of a ``.pte`` holding metadata entry ``key``: a method name cannot hold a
    dot, so ``pareco.labels`` is ``pareco_labels``."""
    return key.replace(".", "_")


def get_format(name: str) -> Format:
    """The :class:`Format` called ``name`` (ExportError listing the formats if unknown)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format '{name}'; choose one of {', '.join(FORMATS)}") from None


def _import(modules: tuple[str, ...], hint: str) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingDependencyError(f"{hint} ({name} cannot be imported: {exc})") from None


def require(fmt: str, for_export: bool = True) -> None:
    """Check that the packages ``fmt`` needs can be imported, else :class:`MissingDependencyError`.

    ``for_export=False`` checks only what loading and running a file needs.
    """
    if fmt == "onnx":
        _import(
            ("onnx", "onnxscript", "onnxruntime") if for_export else ("onnxruntime",),
            _ONNX_HINT if for_export else _ORT_HINT,
        )
    elif fmt == "executorch":
        with _quiet_executorch():
            _import(
                (
                    "executorch.exir",
                    "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                    "executorch.runtime",
                )
                if for_export
                else ("executorch.runtime",),
                _MOBILE_HINT if for_export else _MOBILE_RUN_HINT,
            )


def versions(fmt: str) -> dict[str, str]:
    """Installed versions of the distributions a file of format ``fmt`` depends on."""
    out = {}
    for dist in get_format(fmt).packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


@contextlib.contextmanager
def _quiet_executorch() -> Iterator[None]:
    """Hide ExecuTorch's notices about its own internals while it imports, lowers and loads.

    It logs a torch deprecation about pytree enums on import, warns about its use of deprecated
    ``importlib.resources`` calls, and flags its Python runtime as experimental; none of these is
    something a pareco user can act on.
    """
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(executorch|importlib)\.")
            warnings.filterwarnings("ignore", message="This API is experimental")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence TorchScript's deprecation warnings and the tracer's shape warnings from pareco's models.

    TorchScript is deprecated upstream but still asked for; its FutureWarnings carry no action for
    a pareco user. The models' option-A shortcut compares channel counts in Python while tracing:
    a sliced model's channel counts are fixed, so the recorded constant is right.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"pareco_runtime\.")
        yield


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 to a temporary file for the block; yield a function reading what it got.

    ExecuTorch's C++ runtime logs from native code (CPU probing, thread-pool resets) straight to
    descriptor 2, which Python's ``sys.stderr`` redirection cannot catch.
    """
    with tempfile.TemporaryFile(mode="w+b") as sink:

        def read() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f" (runtime said: {lines[-1]})" if lines else ""


# ---------------------------------------------------------------------------------------------- writers


def _batch_dim(batch: BatchRange) -> tuple[dict[int, Any], ...] | None:
    """``dynamic_shapes`` for the model's one positional input: None for a static batch, else a
    symbolic batch dimension with the range's upper bound (if any)."""
    if batch.is_static:
        return None
    bound = {} if batch.high is None else {"min": batch.low, "max": batch.high}
    return ({0: torch.export.Dim("batch", **bound)},)


def write_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Export with the torch.export-based ONNX exporter to one self-contained file with a dynamic batch.

    The graph is optimised by onnxscript, checked with ``onnx.checker`` and must use opset
    ``MIN_OPSET`` or newer; ``metadata`` becomes the model's ``metadata_props``. Returns ``{"opset": N}``.
    """
    import onnx

    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=_batch_dim(batch),
        external_data=False,
        verbose=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["output"],
    )
    program.model.metadata_props.update(metadata)
    # external_data=False keeps the weights inside the file; models over ONNX's 2 GB limit would
    # still be split, which export_point reports as a side file.
    program.save(path, external_data=False)
    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    version = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if version < MIN_OPSET:
        raise ExportError(
            f"{path.name}: ONNX opset {version} is older than {MIN_OPSET}; export with "
            f"opset {MIN_OPSET} or newer"
        )
    return {"opset": int(version)}


def _save_via_memory(save: Callable[[io.BytesIO], None], path: Path) -> None:
    """Serialise into memory, then write the bytes: torch's C++ file writer aborts the whole process
    when the disk fills mid-write (measured on a full tmpfs: exit 134 for TorchScript and .pt2),
    while a failed Python write is an ``OSError`` the caller reports in one line."""
    buffer = io.BytesIO()
    save(buffer)
    path.write_bytes(buffer.getbuffer())


def write_torchscript(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Trace and save as TorchScript (the plain traced module: never ``optimize_for_inference``'s output,
    which bakes in CPU-specific ops and does not load everywhere); ``metadata`` as extra files."""
    with quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False)
        _save_via_memory(lambda f: torch.jit.save(traced, f, _extra_files=dict(metadata)), path)
    return {}


def write_pt2(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """``torch.export.export`` with a dynamic batch, saved with ``torch.export.save``; ``metadata`` as extra files."""
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim(batch))
    _save_via_memory(lambda f: torch.export.save(program, f, extra_files=dict(metadata)), path)
    return {}


def write_executorch(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Lower to ExecuTorch with the XNNPACK partitioner and write the ``.pte`` program for ``batch``.

    A static batch gives static shapes; a bounded range (``dynamic:MAX``) a ``torch.export`` Dim whose
    bound sizes the planned memory. The range is also stored in the program as two constant methods
    (:data:`BATCH_METHODS`), so that a runner knows it without ``export.json``, and each ``metadata``
    entry as a constant method returning its text (``.`` in its key becomes ``_``). A model whose batch
    cannot be made dynamic is an :class:`ExportError` that names the static ``--batch N`` instead.
    Returns ``{"undelegated_ops": [...]}``: the operators XNNPACK did not take, which run on
    ExecuTorch's portable kernels (for ResNet-CIFAR: the strided slice of the option-A shortcut).
    """
    with _quiet_executorch():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        low, high = BATCH_METHODS
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim(batch))
            edge = to_edge_transform_and_lower(
                program,
                partitioner=[XnnpackPartitioner()],
                constant_methods={
                    low: batch.low,
                    high: batch.high,
                    **{constant_method(key): text for key, text in metadata.items()},
                },
            )
        except Exception as exc:
            if batch.is_static:
                raise
            raise ExportError(
                f"{path.name}: this model cannot be lowered to ExecuTorch with a dynamic batch "
                f"(--batch {batch.record()}: {type(exc).__name__}: {first_line(exc)}); export it "
                f"with a static batch instead, --batch N"
            ) from exc
        # Read before to_executorch(), which rewrites the graph into out-variants and memory allocations.
        names = {
            getattr(node.target, "__name__", str(node.target))
            for node in edge.exported_program().graph.nodes
            if node.op == "call_function"
        }
        buffer = edge.to_executorch().buffer
    undelegated = sorted(
        n for n in names if "call_delegate" not in n and n not in ("getitem", "sym_size.int")
    )
    path.write_bytes(buffer)
    return {"undelegated_ops": undelegated}


Writer = Callable[[nn.Module, torch.Tensor, Path, int | None, BatchRange, Mapping[str, str]], dict[str, Any]]
WRITERS: dict[str, Writer] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
    "pt2": write_pt2,
    "executorch": write_executorch,
}


# ---------------------------------------------------------------------------------------------- runners


class Runner:
    """A loaded export: ``runner(x)`` runs a batch (NumPy array or tensor) and returns the output as NumPy.

    ``bind(x)`` converts ``x`` once to the runtime's own input type and returns a zero-argument
    callable running just the inference, for timing loops. ``batches``: the batch sizes the file
    accepts (None: any); a batch outside it is an :class:`ExportError` naming the ``--batch`` to
    export with, before the runtime sees it.
    """

    def __init__(
        self,
        fmt: str,
        path: Path,
        run: Callable[[Any], Any],
        prepare: Callable[[Any], Any],
        batches: BatchRange | None = None,
        keep: Any = None,
    ) -> None:
        self.fmt = fmt
        self.path = path
        self.batches = batches
        self._keep = keep  # native objects the runtime needs alive while ``run`` is used
        self._run = run
        self._prepare = prepare

    def _check(self, x: Any) -> None:
        n = int(x.shape[0])
        if self.batches is None or self.batches.accepts(n):
            return
        if self.batches.is_static:
            raise ExportError(
                f"{self.path.name} was exported for batch {self.batches.low} but got batch {n}; "
                f"export it again with --batch {n}, or --batch dynamic:MAX for any batch up to MAX"
            )
        raise ExportError(
            f"{self.path.name} runs {self.batches.describe()} (exported with --batch "
            f"{self.batches.record()}) but got batch {n}; export it again with --batch dynamic:{max(n, 2)} "
            "or a larger bound"
        )

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Run one batch; the output as a float NumPy array."""
        self._check(x)
        out = self._run(self._prepare(x))
        return out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def bind(self, x: np.ndarray | torch.Tensor) -> Callable[[], Any]:
        """A callable running the inference on ``x`` (converted once), returning the runtime's raw output."""
        self._check(x)
        prepared = self._prepare(x)
        run = self._run
        return lambda: run(prepared)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (
        (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))).float().contiguous()
    )


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    return np.ascontiguousarray(arr, dtype=np.float32)


def _torch_runner(fmt: str, path: Path, module: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return Runner(fmt, path, run, _as_tensor)


def onnx_session_options(threads: int | None) -> Any:
    """onnxruntime session options for latency: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimisation, and no spinning of idle pool threads (spinning
    threads would steal the CPU from the other candidates of an interleaved benchmark)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    return opts


# ExecuTorch programs alive in this process: their XNNPACK delegates keep a pointer to the thread pool.
_LIVE_PROGRAMS: weakref.WeakSet[Any] = weakref.WeakSet()


def set_executorch_threads(threads: int) -> bool:
    """Size ExecuTorch's process-wide thread pool (the one XNNPACK uses) to ``threads``.

    ExecuTorch 1.5.1's Python runtime exposes this only as the experimental
    ``_unsafe_reset_threadpool``, which replaces the pool: programs loaded before keep a pointer to
    the old one and crash when run. So the pool is resized only while no program is loaded;
    asking for another size later raises :class:`ExportError`. Returns False when a build lacks
    the call (its default pool is then used).
    """
    with _quiet_executorch():
        from executorch.extension.pybindings import portable_lib

    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    current = getattr(portable_lib, "_threadpool_get_thread_count", None)
    if reset is None or current is None:
        return False
    with captured_stderr():  # the pool's creation logs its CPU probing
        now = current()
        if now != threads:
            if len(_LIVE_PROGRAMS):
                raise ExportError(
                    f"ExecuTorch's thread pool is process-wide and runs {now} thread(s) for the "
                    f"programs already loaded; load files with {threads} thread(s) in a new process"
                )
            reset(int(threads))
    return True


def load_runner(fmt: str, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
    """Load an exported file in its own runtime and return a :class:`Runner`.

    ``threads``: intra-op threads of onnxruntime, the ExecuTorch thread pool, or (TorchScript,
    ``.pt2``) ``torch.set_num_threads``, which is process-wide; None leaves the runtime's default.
    Raises :class:`ExportError` when the file cannot be loaded, :class:`MissingDependencyError`
    when its runtime is not installed.
    """
    get_format(fmt)
    require(fmt, for_export=False)
    source = Path(path)
    if not source.is_file():
        raise ExportError(f"{source}: no such exported file; run `pareco export` first")
    if threads is not None and fmt in ("torchscript", "pt2"):
        torch.set_num_threads(threads)
    try:
        if fmt == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(
                str(source), onnx_session_options(threads), providers=["CPUExecutionProvider"]
            )
            name = session.get_inputs()[0].name
            return Runner(fmt, source, lambda x: session.run(None, {name: x})[0], _as_array)
        if fmt == "torchscript":
            with quiet_torchscript():
                module = torch.jit.load(str(source), map_location="cpu")
            return _torch_runner(fmt, source, module.eval())
        if fmt == "pt2":
            if not zipfile.is_zipfile(source):  # torch.export.load would log a traceback before failing
                raise ExportError(f"{source}: not a .pt2 archive; export it again with `pareco export --pt2`")
            return _torch_runner(fmt, source, torch.export.load(str(source)).module())
        return _load_executorch(source, threads)
    except ExportError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ExportError(
            f"{source}: cannot load as {fmt} ({text[0] if text else type(exc).__name__}); "
            "export it again with this version of pareco"
        ) from None


def _load_executorch(source: Path, threads: int | None) -> Runner:
    with _quiet_executorch():
        from executorch.runtime import Runtime

    if threads is not None:
        set_executorch_threads(threads)
    with captured_stderr() as said, _quiet_executorch():
        try:
            program = Runtime.get().load_program(source)
            method = program.load_method("forward")
        except RuntimeError as exc:
            raise ExportError(
                f"{source}: ExecuTorch cannot load it ({exc}){_last_line(said())}; export it "
                "again with this version of pareco and executorch"
            ) from None
    _LIVE_PROGRAMS.add(program)
    batches = _program_batches(program, method)

    def run(x: torch.Tensor) -> torch.Tensor:
        return method.execute((x,))[0]

    # The method's native object points into the program: the runner keeps the program alive.
    return Runner("executorch", source, run, _as_tensor, batches=batches, keep=program)


def _program_batches(program: Any, method: Any) -> BatchRange:
    """The batch range a loaded program accepts: its :data:`BATCH_METHODS`, or, in a program without
    them (written by pareco before bounded batches, or by another tool), the planned input's batch
    taken as static (the largest a dynamic one accepts, so never a batch it cannot run)."""
    planned = int(method.metadata.input_tensor_meta(0).sizes()[0])
    if not set(BATCH_METHODS) <= set(program.method_names):
        return BatchRange.static(planned)
    low, high = (int(program.load_method(name).execute(())[0]) for name in BATCH_METHODS)
    return BatchRange(low, high)
