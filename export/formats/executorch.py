"""ExecuTorch: a ``.pte`` program lowered to XNNPACK for the batch range it is exported for, run in
ExecuTorch's Python runtime with its process-wide thread pool.

int8: the PT2E flow with ExecuTorch's XNNPACK quantizer in its recommended configuration
(symmetric int8, per-channel weights, static per-tensor activations), activation ranges observed on
the calibration images, then lowered to XNNPACK like an fp32 program.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import (
    ExportError,
    Format,
    Int8Flow,
    Runner,
    Serving,
    as_tensor,
    batch_dim,
    captured_stderr,
    each,
    last_line,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..quantize import Calibration

# Constant methods of every .pte pareco writes: the smallest and largest batch its forward accepts.
BATCH_METHODS = ("pareco_batch_low", "pareco_batch_high")


def constant_method(key: str) -> str:
    """The constant method of a ``.pte`` holding metadata entry ``key``: a method name cannot hold a
    dot, so ``pareco.labels`` is ``pareco_labels``."""
    return key.replace(".", "_")


@contextlib.contextmanager
def quiet_executorch() -> Iterator[None]:
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


def write_executorch(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
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
    import torch

    from pareco_runtime.untrusted import first_line

    with quiet_executorch():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        low, high = BATCH_METHODS
        try:
            program = torch.export.export(
                model, example, dynamic_shapes=batch_dim(model, batch, len(example))
            )
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


def quantize_pt2e(model: nn.Module, calib: Calibration) -> nn.Module:
    """``model`` quantized in the PT2E flow with XNNPACK's recommended config, its activation ranges
    observed on ``calib``; the result is a module :func:`write_executorch` lowers."""
    import torch

    with quiet_executorch():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        # Traced at batch 2 with a dynamic batch, so that calibration runs whole batches (torch.export
        # specialises batches of 0 and 1).
        example = calib.batches[0][:1].expand(2, *calib.batches[0].shape[1:]).contiguous()
        graph = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        ).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calib.batches:
                prepared(x)
        return convert_pt2e(prepared)


def write_executorch_int8(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
    calib: Calibration,
) -> dict[str, Any]:
    """``model`` quantized in the PT2E flow (:func:`quantize_pt2e`), then lowered."""
    return write_executorch(quantize_pt2e(model, calib), example, path, opset, batch, metadata)


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
    with quiet_executorch():
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


def pool_threads(threads: int) -> str:
    """:func:`set_executorch_threads`, and the note a report gives of it."""
    if set_executorch_threads(threads):
        return (
            f"ExecuTorch thread pool set to {threads} via its experimental _unsafe_reset_threadpool "
            "(process-wide)"
        )
    return "this ExecuTorch build cannot set its thread count; it used its default pool"


def load_executorch(source: Path, threads: int | None) -> Runner:
    """The program's ``forward`` in ExecuTorch's runtime, accepting the batch range it records."""
    with quiet_executorch():
        from executorch.runtime import Runtime

    if threads is not None:
        set_executorch_threads(threads)
    with captured_stderr() as said, quiet_executorch():
        try:
            program = Runtime.get().load_program(source)
            method = program.load_method("forward")
        except RuntimeError as exc:
            raise ExportError(
                f"{source}: ExecuTorch cannot load it ({exc}){last_line(said())}; export it "
                "again with this version of pareco and executorch"
            ) from None
    _LIVE_PROGRAMS.add(program)
    batches = _program_batches(program, method)

    def run(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return method.execute(tuple(xs))

    # The method's native object points into the program: the runner keeps the program alive.
    return Runner("executorch", source, run, each(as_tensor), batches=batches, keep=program)


def _program_batches(program: Any, method: Any) -> BatchRange:
    """The batch range a loaded program accepts: its :data:`BATCH_METHODS`, or, in a program without
    them (written by pareco before bounded batches, or by another tool), the planned input's batch
    taken as static (the largest a dynamic one accepts, so never a batch it cannot run)."""
    planned = int(method.metadata.input_tensor_meta(0).sizes()[0])
    if not set(BATCH_METHODS) <= set(program.method_names):
        return BatchRange.static(planned)
    low, high = (int(program.load_method(name).execute(())[0]) for name in BATCH_METHODS)
    return BatchRange(low, high)


FORMAT = Format(
    name="executorch",
    title="ExecuTorch",
    ext=".pte",
    # ExecuTorch plans memory for fixed shapes: a .pte file runs the batch range it was exported for.
    dynamic_batch=False,
    packages=("torch", "executorch"),
    extra="mobile",
    export_modules=(
        "executorch.exir",
        "executorch.backends.xnnpack.partition.xnnpack_partitioner",
        "executorch.runtime",
    ),
    run_modules=("executorch.runtime",),
    write=write_executorch,
    load=load_executorch,
    flag_help="ExecuTorch .pte lowered to XNNPACK (the batch of --batch).",
    # A method runs in memory planned once: calls are serialised and outputs copied out.
    serving=Serving(
        backend="executorch",
        package="executorch",
        runtime="executorch {version} XNNPACK",
        extras=("export", "mobile"),
        concurrent=False,
        pool_threads=pool_threads,
    ),
    int8=Int8Flow(
        quantizer="executorch XNNPACKQuantizer, symmetric, per-channel weights (PT2E)",
        write=write_executorch_int8,
    ),
    quiet=quiet_executorch,
)
