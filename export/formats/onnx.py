"""ONNX: one self-contained ``.onnx`` file with a dynamic batch, run in onnxruntime's CPU provider.

int8: onnxruntime's static quantizer in QDQ form (per-channel int8 weights, uint8 activations, the
pairing its CPU kernels run fastest) applied to the fp32 file, activation ranges observed on the
calibration images. A quantized file cannot match PyTorch to ``--atol``, so its check is its
accuracy (:mod:`export.int8`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import Calibration, ExportError, Format, Int8Flow, Runner, Serving, as_array, batch_dim, each

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

# The smallest opset the ONNX files use (the torch.export-based exporter emits 18 or newer).
MIN_OPSET = 18


def input_names(count: int) -> list[str]:
    """The ONNX input names of a network of ``count`` inputs: ``input``, then ``input1``, ``input2``, ...
    (a one-input file's name is the one files of earlier versions have)."""
    return ["input", *(f"input{i}" for i in range(1, count))]


def write_onnx(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
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
    import torch

    with warnings.catch_warnings():
        # Several inputs share one batch dimension, which the exporter names once and says so.
        warnings.filterwarnings(
            "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
        )
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            dynamic_shapes=batch_dim(model, batch, len(example)),
            external_data=False,
            verbose=False,
            opset_version=opset,
            input_names=input_names(len(example)),
            # FlatOutputs (pareco_runtime.outputs) names a network's several outputs.
            output_names=list(getattr(model, "output_names", ["output"])),
        )
    assert program is not None  # None only from the legacy exporter (dynamo=False)
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


def write_onnx_int8(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
    calib: Calibration,
) -> dict[str, Any]:
    """The fp32 file, staged beside ``path`` and removed, quantized into ``path`` (:func:`quantize_onnx`)."""
    fp32 = path.with_name(f"fp32-{path.name}")
    details = write_onnx(model, example, fp32, opset, batch, metadata)
    quantize_onnx(fp32, path, calib)
    fp32.unlink()
    return details


def quantize_onnx(fp32: Path, out: Path, calib: Calibration) -> None:
    """Quantize the fp32 ONNX file ``fp32`` into ``out`` with onnxruntime's static QDQ quantizer,
    observing ``calib``, after the pre-processing (shape inference, graph optimisation) onnxruntime
    recommends; the fp32 file's metadata is kept. The pre-processed file is staged beside ``out``
    and removed."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(calib.batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {"input": x.numpy().astype(np.float32)}

    prepared = out.with_name(f"prepared-{out.name}")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        _Images(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    prepared.unlink()


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


def load_onnx(path: Path, threads: int | None) -> Runner:
    """An onnxruntime CPU session of ``path`` with :func:`onnx_session_options`."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), onnx_session_options(threads), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    return Runner("onnx", path, lambda xs: session.run(None, dict(zip(names, xs))), each(as_array))


FORMAT = Format(
    name="onnx",
    title="ONNX",
    ext=".onnx",
    dynamic_batch=True,
    packages=("torch", "onnx", "onnxscript", "onnxruntime"),
    extra="export",
    export_modules=("onnx", "onnxscript", "onnxruntime"),
    run_modules=("onnxruntime",),
    write=write_onnx,
    load=load_onnx,
    flag_help="ONNX (dynamic batch, opset >= 18), checked in onnxruntime.",
    # An ONNX Runtime session may be run from several threads at once (its documented contract).
    serving=Serving(
        backend="onnxruntime",
        package="onnxruntime",
        runtime="onnxruntime {version} CPUExecutionProvider (ORT_ENABLE_ALL, sequential)",
        extras=("export",),
        concurrent=True,
    ),
    int8=Int8Flow(
        quantizer="onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations",
        write=write_onnx_int8,
    ),
)
