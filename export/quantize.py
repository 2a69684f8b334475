"""Post-training static int8 quantization of a sliced model, calibrated on images.

ExecuTorch files are quantized in the PT2E flow with ExecuTorch's XNNPACK quantizer in its
recommended configuration (symmetric int8, per-channel weights, static per-tensor activations) and
lowered to XNNPACK; ONNX files with onnxruntime's static quantizer in QDQ form (per-channel int8
weights, uint8 activations, the pairing its CPU kernels run fastest), from the fp32 ONNX export.
Both observe activation ranges on the calibration images. A quantized file cannot match PyTorch
to ``--atol``, so its check is its accuracy (:mod:`export.int8`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .formats import ExportError, _quiet_executorch, get_format

# The formats with an int8 flow, and the runtime (``pareco bench --backend``) each file runs in.
INT8_BACKENDS = {"onnx": "onnxruntime", "executorch": "executorch"}
# Calibration images come in batches of this many (``--calib-batches`` counts them).
CALIB_BATCH = 32
# The quantizers, as export.json records them.
QUANTIZERS = {
    "executorch": "executorch XNNPACKQuantizer, symmetric, per-channel weights (PT2E)",
    "onnx": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations",
}


@dataclass
class Calibration:
    """The images activation ranges are observed on: ``batches`` (normalised inputs) and ``text``
    (which images, for people and records)."""

    batches: list[torch.Tensor]
    text: str

    def __post_init__(self) -> None:
        if not self.batches or not sum(len(b) for b in self.batches):
            raise ExportError(f"no calibration images ({self.text}); give --calib data with training images")

    @property
    def images(self) -> int:
        """How many images calibrate."""
        return sum(len(b) for b in self.batches)


def int8_name(point: str, fmt: str) -> str:
    """The file name of ``point``'s int8 program in ``fmt``: ``p03.int8.pte``."""
    return f"{point}.int8{get_format(fmt).ext}"


def check_int8_formats(formats: Sequence[str]) -> None:
    """ExportError unless every format of ``formats`` has an int8 flow (ONNX, ExecuTorch)."""
    other = [f for f in formats if f not in INT8_BACKENDS]
    if other:
        raise ExportError(
            f"--int8 makes ONNX and ExecuTorch programs, not {', '.join(other)}; export those in another run"
        )


def quantize_pt2e(model: nn.Module, calib: Calibration) -> nn.Module:
    """``model`` quantized in the PT2E flow with XNNPACK's recommended config, its activation ranges
    observed on ``calib``; the result is a module :func:`export.formats.write_executorch` lowers."""
    with _quiet_executorch():
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


def quantize_onnx(fp32: Path, out: Path, calib: Calibration) -> None:
    """Quantize the fp32 ONNX file ``fp32`` into ``out`` with onnxruntime's static QDQ quantizer,
    observing ``calib``, after the pre-processing (shape inference, graph optimisation) onnxruntime
    recommends; the fp32 file's metadata is kept. The pre-processed file is staged beside ``out``
    and removed."""
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
