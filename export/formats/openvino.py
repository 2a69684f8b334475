"""OpenVINO: an IR model (``.xml`` graph beside its ``.bin`` weights, OpenVINO's own format, which
``openvino.save_model`` writes) converted from a ``torch.export`` program with a dynamic batch,
run by OpenVINO's CPU plugin.

Weights are kept in fp32 (``save_model`` would compress them to fp16 by default) and the CPU plugin
is asked for f32 inference (on CPUs with bf16 units it would otherwise run bf16), so that a file
matches PyTorch to ``--atol``. The pareco metadata entries are the model's ``rt_info`` under
``pareco`` (``model.get_rt_info(["pareco", "point"])``); :func:`read_metadata` reads them back.

int8: NNCF's post-training static quantization (``nncf.quantize``, its default performance preset:
symmetric int8 weights and activations, ranges observed on the calibration images) of the fp32 model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange
from .base import Calibration, ExportError, Format, Int8Flow, Runner, Serving, as_array, batch_dim, each
from .signal_stack import keeping_signal_stack

if TYPE_CHECKING:
    import torch
    from torch import nn

# rt_info section holding the pareco entries: pareco.point is rt_info ["pareco", "point"].
_SECTION = "pareco"
_PREFIX = f"{_SECTION}."


def compile_config(threads: int | None) -> dict[str, Any]:
    """The CPU plugin's settings for latency: one stream, f32 inference (see the module docstring),
    ``threads`` inference threads (None: the plugin's default)."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


@contextlib.contextmanager
def quiet_openvino() -> Iterator[None]:
    """Hide NNCF's progress bars (printed to stdout), its info logs and the warning its import
    prompts, and the torch warnings of conversion and quantization."""
    # NNCF imports torch.utils.cpp_extension, which warns that no CUDA runtime is found.
    loggers = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _convert(model: nn.Module, example: tuple[torch.Tensor, ...], batch: BatchRange) -> Any:
    """``model`` as an OpenVINO model with a dynamic batch, converted from its ``torch.export`` program."""
    import openvino as ov
    import torch

    program = torch.export.export(model.eval(), example, dynamic_shapes=batch_dim(model, batch, len(example)))
    return ov.convert_model(program)


def _save(ov_model: Any, path: Path, metadata: Mapping[str, str]) -> dict[str, Any]:
    """Write ``ov_model`` with ``metadata`` in its rt_info to ``path`` (and its ``.bin``), weights uncompressed."""
    import openvino as ov

    for key, text in metadata.items():
        ov_model.set_rt_info(text, [_SECTION, key.removeprefix(_PREFIX)])
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return {"weights_file": path.with_suffix(".bin").name}


def write_openvino(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """Convert ``model`` (any batch) and save it as IR at ``path`` (``.xml``) and ``.bin`` beside it."""
    with quiet_openvino():
        return _save(_convert(model, example, batch), path, metadata)


def write_openvino_int8(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int | None,
    batch: BatchRange,
    metadata: Mapping[str, str],
    calib: Calibration,
) -> dict[str, Any]:
    """The converted model quantized by ``nncf.quantize`` on ``calib``, saved as :func:`write_openvino` does."""
    with quiet_openvino():
        import nncf

        fp32 = _convert(model, example, batch)
        dataset = nncf.Dataset(calib.batches, lambda x: x.numpy())
        quantized = nncf.quantize(fp32, dataset, subset_size=calib.images)
        return _save(quantized, path, metadata)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The pareco entries of an IR file's rt_info, keyed as written (``pareco.point``, ...)."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    if not model.has_rt_info([_SECTION]):
        return {}
    section: dict[str, Any] = model.get_rt_info()[_SECTION]
    return {f"{_PREFIX}{key}": value.astype(str) for key, value in section.items()}


def load_openvino(path: Path, threads: int | None) -> Runner:
    """``path`` compiled for OpenVINO's CPU plugin with :func:`compile_config`, run through one
    infer request (any batch)."""
    import openvino as ov

    if not path.with_suffix(".bin").is_file():
        raise ExportError(
            f"{path}: its weights file {path.with_suffix('.bin').name} is missing; keep the .xml "
            "and .bin of an OpenVINO export together, or export it again"
        )
    with keeping_signal_stack():  # the CPU plugin swaps this thread's signal stack (see signal_stack)
        compiled = ov.Core().compile_model(str(path), "CPU", compile_config(threads))
        request = compiled.create_infer_request()

    count = len(compiled.outputs)

    def run(xs: list[Any]) -> Any:
        # Every output, in the model's (flattened) order; copied out of the request (share_outputs=False).
        results = request.infer(dict(enumerate(xs)))
        return [results[i] for i in range(count)]

    return Runner("openvino", path, run, each(as_array), keep=compiled)


FORMAT = Format(
    name="openvino",
    title="OpenVINO",
    ext=".xml",
    side_exts=(".bin",),
    dynamic_batch=True,
    packages=("torch", "openvino", "nncf"),
    extra="openvino",
    export_modules=("openvino", "nncf"),
    run_modules=("openvino",),
    flag_help="OpenVINO IR, .xml with its .bin weights (dynamic batch), checked on the CPU plugin.",
    write=write_openvino,
    load=load_openvino,
    # One infer request per loaded file: calls are serialised.
    serving=Serving(
        backend="openvino",
        package="openvino",
        runtime="openvino {version} CPU plugin (f32, LATENCY hint, 1 stream)",
        extras=("openvino",),
        concurrent=False,
    ),
    int8=Int8Flow(
        quantizer="nncf.quantize, default (performance) preset, symmetric int8", write=write_openvino_int8
    ),
    quiet=quiet_openvino,
)
