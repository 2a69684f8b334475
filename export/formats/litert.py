"""LiteRT (formerly TensorFlow Lite): a ``.tflite`` flatbuffer converted by ``litert-torch`` for one
static batch, run in ``ai-edge-litert``'s Interpreter with its default XNNPACK delegate.

A ``.tflite`` file runs the batch it was exported for (``--batch N``): litert-torch 0.10.0 cannot
convert a symbolic batch (its JAX lowering rejects it: "Shapes must be 1D sequences of concrete
values"), and resizing a static file's input fails in XNNPACK wherever the graph holds a reshape.
The pareco metadata entries are stored in the flatbuffer's own ``metadata`` table (name -> buffer),
where LiteRT tools look for a model's metadata; :func:`read_metadata` reads them back.

int8: litert-torch's PT2E quantizer (symmetric int8, per-channel weights, static per-tensor
activations), activation ranges observed on the calibration images, converted with its quant config.
The program it makes takes and returns int8 tensors; the runner quantizes the float input and
dequantizes the logits with the scales and zero points the file records, as an app does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import (
    Calibration,
    ExportError,
    Format,
    Int8Flow,
    Runner,
    Serving,
    as_array,
    captured_stderr,
    last_line,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

_IDENTIFIER = b"TFL3"


@contextlib.contextmanager
def quiet_litert() -> Iterator[None]:
    """Hide litert-torch's progress lines, absl's and TensorFlow's native logs and their import-time
    warnings (about JAX, torch deprecations) while it imports and converts: nothing a pareco user can
    act on. A failure still carries its exception."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        captured_stderr(),
    ):
        warnings.simplefilter("ignore")
        level = logging.root.level
        logging.root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.root.setLevel(level)


def _static_batch(batch: BatchRange, path: Path) -> None:
    """ExportError unless ``batch`` is one batch size (see the module docstring for why)."""
    if not batch.is_static:
        raise ExportError(
            f"{path.name}: a LiteRT file runs one batch size (litert-torch cannot convert a dynamic "
            f"batch), not --batch {batch.record()}; export it with --batch N"
        )


def write_litert(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Convert ``model`` with litert-torch at ``example``'s (static) batch and write the ``.tflite``
    with ``metadata`` in its metadata table. Returns ``{}``."""
    _static_batch(batch, path)
    with quiet_litert():
        import litert_torch

        content = bytes(litert_torch.convert(model.eval(), example).model_content())
    path.write_bytes(with_metadata(content, metadata))
    return {}


def quantize_litert(model: nn.Module, example: tuple[torch.Tensor, ...], calib: Calibration) -> bytes:
    """``model`` quantized with litert-torch's PT2E quantizer, activation ranges observed on ``calib``,
    converted at ``example``'s batch; the ``.tflite`` bytes."""
    import torch

    with quiet_litert():
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        # Traced with a dynamic batch so that calibration runs whole batches of 32.
        trace = calib.batches[0][:1].expand(2, *example[0].shape[1:]).contiguous()
        graph = torch.export.export(
            model.eval(), (trace,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        ).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calib.batches:
                prepared(x)
        quantized = convert_pt2e(prepared, fold_quantize=False)
        converted = litert_torch.convert(
            quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)
        )
        return bytes(converted.model_content())


def write_litert_int8(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
    calib: Calibration,
) -> dict[str, Any]:
    """``model`` quantized (:func:`quantize_litert`) and written with ``metadata``."""
    _static_batch(batch, path)
    path.write_bytes(with_metadata(quantize_litert(model, example, calib), metadata))
    return {}


def with_metadata(content: bytes, metadata: Mapping[str, str]) -> bytes:
    """The flatbuffer ``content`` with each ``metadata`` entry added to its metadata table (UTF-8 text
    in a new buffer), replacing entries of the same name."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    kept = [m for m in (model.metadata or []) if _text(m.name) not in metadata]
    for key, text in metadata.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = key
        entry.buffer = len(model.buffers) - 1
        kept.append(entry)
    model.metadata = kept
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def _text(name: str | bytes | None) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else (name or "")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text entries of a ``.tflite`` file's metadata table (pareco's ``pareco.*`` among them;
    entries that are not UTF-8 text, such as the converter's own, are left out)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # an empty buffer
            continue
        with contextlib.suppress(UnicodeDecodeError):
            out[_text(entry.Name())] = data.tobytes().decode("utf-8")
    return out


def _in_model_order(details: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """The interpreter's input (``role`` ``"args"``) or output (``"output"``) details in the PyTorch
    model's (flattened) order: litert-torch names the k-th one ``..._<role>_<k>...`` in the signature;
    the interpreter lists them in its own tensor order, which need not be that one."""

    def position(detail: dict[str, Any]) -> int:
        found = re.search(rf"{role}_(\d+)", str(detail.get("name", "")))
        return int(found.group(1)) if found else 0

    return sorted(details, key=position) if len(details) > 1 else details


def load_litert(path: Path, threads: int | None) -> Runner:
    """An ai-edge-litert Interpreter of ``path`` with ``threads`` threads (None: its default) and its
    default XNNPACK delegate, accepting the one batch the file was converted for."""
    import numpy as np

    with quiet_litert():
        from ai_edge_litert.interpreter import Interpreter

    with captured_stderr() as said:
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ExportError(
                f"{path}: LiteRT cannot load it ({exc}){last_line(said())}; export it again with "
                "this version of pareco and ai-edge-litert"
            ) from None
    inputs = _in_model_order(interpreter.get_input_details(), "args")
    outputs = _in_model_order(interpreter.get_output_details(), "output")
    batch = BatchRange.static(int(inputs[0]["shape"][0]))
    sources = [(given["index"], given["dtype"], _integer_io(given)) for given in inputs]
    targets = [(output["index"], _integer_io(output)) for output in outputs]

    def prepare(xs: Sequence[Any]) -> list[Any]:
        prepared = []
        for x, (_, dtype, quantize) in zip(xs, sources):
            arr = as_array(x)
            if quantize is None:
                # Token ids: the converter may type them int32 where torch had int64.
                prepared.append(arr if arr.dtype.kind == "f" else arr.astype(dtype, copy=False))
                continue
            scale, zero, qtype = quantize
            bounds = np.iinfo(qtype)
            prepared.append(np.clip(np.round(arr / scale) + zero, bounds.min, bounds.max).astype(qtype))
        return prepared

    def read(target: int, dequantize: Any) -> Any:
        y = interpreter.get_tensor(target)  # a copy: the next invoke cannot overwrite it
        if dequantize is None:
            return y
        scale, zero, _ = dequantize
        return (y.astype(np.float32) - zero) * scale

    def run(xs: list[Any]) -> list[Any]:
        for (source, _, _), x in zip(sources, xs):
            interpreter.set_tensor(source, x)
        interpreter.invoke()
        return [read(target, dequantize) for target, dequantize in targets]

    return Runner("litert", path, run, prepare, batches=batch, keep=interpreter)


def _integer_io(detail: dict[str, Any]) -> tuple[float, int, Any] | None:
    """(scale, zero point, dtype) of a quantized input or output (an int8 program converted with
    integer I/O takes and returns quantized tensors); None for a float one or for integer token ids
    (no scale)."""
    import numpy as np

    scale, zero = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or not scale:
        return None
    return float(scale), int(zero), detail["dtype"]


FORMAT = Format(
    name="litert",
    title="LiteRT",
    ext=".tflite",
    # litert-torch converts static shapes only: a .tflite file runs the batch it was exported for.
    dynamic_batch=False,
    packages=("torch", "litert-torch", "ai-edge-litert"),
    extra="litert",
    export_modules=("litert_torch", "ai_edge_litert.interpreter"),
    run_modules=("ai_edge_litert.interpreter",),
    flag_help="LiteRT (TensorFlow Lite) .tflite for the Interpreter with XNNPACK (the batch of --batch N).",
    write=write_litert,
    load=load_litert,
    # An Interpreter runs in tensors allocated once: calls are serialised.
    serving=Serving(
        backend="litert",
        package="ai-edge-litert",
        runtime="ai-edge-litert {version} Interpreter, XNNPACK delegate",
        extras=("litert",),
        concurrent=False,
        cache_batch="1",
    ),
    int8=Int8Flow(
        quantizer="litert-torch PT2EQuantizer, symmetric, per-channel weights, static activations",
        write=write_litert_int8,
    ),
    quiet=quiet_litert,
)
