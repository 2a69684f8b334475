"""Export one model, or chosen points of a front, and check each file against PyTorch.

Each export is staged in a temporary folder beside its target, loaded back in its own runtime and
compared with the PyTorch model on random inputs; only a file that passes is moved into place
(atomically), so a failed export or a crash leaves the previous file or none, never half of one.
Staging folders a killed export left are removed by the next export into that folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pareco_runtime.atomic import atomic_path, remove_stale_temporaries, staging_dir
from pareco_runtime.filelock import locked
from pareco_runtime.inputs import InputSpec
from pareco_runtime.manifest import utc_timestamp
from pareco_runtime.outputs import flatten_outputs, with_flat_outputs
from pareco_runtime.untrusted import first_line, sha256_file

from .batch import BatchRange, as_batch_range
from .formats import (
    Calibration,
    ExportError,
    Runner,
    check_int8_formats,
    get_format,
    int8_name,
    load_runner,
    require,
    versions,
)
from .index import INDEX_NAME, merge_index, read_index
from .metadata import Carried, write_labels

if TYPE_CHECKING:
    from pareco_runtime import FrontPoint, SlimmableRuntime

# fp32 files must reproduce PyTorch's logits to this absolute difference.
DEFAULT_ATOL = 1e-4
# Batch sizes a dynamic-batch file is checked at: the smallest one and one that was not traced (and,
# for a bounded range, its bound, where the planned memory is full).
_DYNAMIC_CHECK_BATCHES = (1, 3)
# Traced with batch 2: torch.export specialises dimensions of size 0 and 1, so they cannot be dynamic.
_TRACE_BATCH = 2


@dataclass
class ExportResult:
    """One exported file and its parity check.

    ``batch``: the batch sizes the file accepts (static N for an ExecuTorch ``--batch N``, 1 to MAX
    for ``--batch dynamic:MAX``, unbounded for ONNX, TorchScript and ``.pt2``).
    ``max_abs_diff``: the largest absolute difference to PyTorch over the checked batches.
    ``details``: the largest absolute PyTorch output over the checked batches (``max_abs_output``)
    and format-specific facts (ONNX opset, operators XNNPACK did not delegate).
    ``carried``: the transform, labels and provenance stored in the file (None: nothing stored).
    ``precision``: "fp32", or "int8" for a quantized program (whose ``details`` hold its quantizer,
    calibration image count and what the caller's check measured, e.g. ``top1``).
    ``sha256``: the file's SHA-256, which its record keeps so that a reader can tell it is this file.
    """

    format: str
    path: Path
    bytes: int
    max_abs_diff: float
    input_size: tuple[int, ...]
    batch: BatchRange
    versions: dict[str, str]
    seconds: float
    point: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    carried: Carried | None = None
    precision: str = "fp32"
    sha256: str | None = None
    input_dtype: str = "float32"
    more_inputs: tuple[InputSpec, ...] = ()

    def to_entry(self, weights_sha256: str | None = None) -> dict[str, Any]:
        """The record ``export.json`` keeps for this file (its name relative to the folder), with the
        transform and labels file of :attr:`carried` when the file carries them."""
        entry: dict[str, Any] = {
            "point": self.point,
            "format": self.format,
            "precision": self.precision,
            "file": self.path.name,
            "bytes": self.bytes,
            "max_abs_diff": self.max_abs_diff,
            "versions": self.versions,
            "input_size": list(self.input_size),
            "batch": self.batch.record(),
            "seconds": round(self.seconds, 3),
            "created": utc_timestamp(),
        }
        if self.input_dtype != "float32":
            entry["input_dtype"] = self.input_dtype
        if self.more_inputs:  # a network of several inputs: each one's, the first's as above
            entry["input_sizes"] = [list(self.input_size), *(list(s.shape) for s in self.more_inputs)]
            entry["input_dtypes"] = [self.input_dtype, *(s.dtype_name for s in self.more_inputs)]
        if weights_sha256 is not None:
            entry["weights_sha256"] = weights_sha256
        if self.sha256 is not None:
            entry["sha256"] = self.sha256
        if self.carried is not None:
            entry.update(self.carried.index_fields())
        entry.update(self.details)
        return entry


Inputs = Sequence[int] | InputSpec | Sequence[InputSpec]


def parity_inputs(
    input_size: Inputs, batches: Sequence[int], seed: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    """Seeded batches of the inputs, one tuple (a batch of each input) per batch size
    (:meth:`InputSpec.batch <pareco_runtime.inputs.InputSpec.batch>`: standard normal for float inputs,
    which are normalised; token ids within the vocabulary)."""
    specs = input_specs(input_size)
    gen = torch.Generator().manual_seed(seed)
    return [tuple(spec.batch(b, gen) for spec in specs) for b in batches]


def input_specs(input_size: Inputs) -> tuple[InputSpec, ...]:
    """What :func:`export_point` takes as ``input_size`` as one spec per input (a plain size is one
    float32 input)."""
    if isinstance(input_size, InputSpec):
        return (input_size,)
    items = tuple(input_size)
    if items and all(isinstance(s, InputSpec) for s in items):
        return items  # type: ignore[return-value]
    return (InputSpec.of(items),)  # type: ignore[arg-type]


def export_point(
    model: nn.Module,
    input_size: Inputs,
    fmt: str,
    path: str | os.PathLike[str],
    *,
    batch: int | str | BatchRange = 1,
    atol: float = DEFAULT_ATOL,
    opset: int | None = None,
    seed: int = 0,
    point: str | None = None,
    carried: Carried | None = None,
    int8: Calibration | None = None,
    accept: Callable[[Runner], dict[str, Any]] | None = None,
    record_in: Path | None = None,
    weights_sha256: str | None = None,
) -> ExportResult:
    """Export ``model`` (a plain eval-mode model, e.g. ``rt.standalone(point)``) to ``path`` as ``fmt``.

    ``fmt``: onnx | torchscript | pt2 | executorch. ``input_size``: the one input's shape without the
    batch ((C, H, W) images, (C, L) sequences), or its :class:`~pareco_runtime.inputs.InputSpec`
    (``rt.input_spec``) for token ids (``(T,)`` int64), or one spec per input of a network of several
    (``rt.input_specs``), each checked batch then a batch of each. A model returning tuples, lists or dicts of tensors
    is exported returning them flattened (:mod:`pareco_runtime.outputs`: dict keys in insertion
    order, items in order; ONNX outputs named by key or index) and every output is checked. ONNX, TorchScript
    and ``.pt2`` files take any batch size and are checked at batches 1 and 3. An ExecuTorch file
    runs ``batch``: an int N (or ``"N"``) is that batch only, checked at it; ``"dynamic:MAX"`` (or
    a :class:`BatchRange`) any batch from 1 to MAX, checked at 1, 3 and MAX. The file is loaded
    back in its own runtime and must match PyTorch within ``atol`` (absolute, on the outputs), else
    :class:`ExportError` and nothing is written. ``opset``: the ONNX opset (default: the exporter's, at least 18).
    ``point`` names the front point in the result; ``carried``: the transform, labels and provenance
    to store in the file (:mod:`export.metadata`). The model is put in eval mode.

    ``int8``: quantize the program with the format's int8 flow (ONNX, ExecuTorch: the format's
    ``Format.int8``) on these calibration images; its difference to PyTorch is recorded, not bounded. ``accept``: called with the loaded
    file before it is moved into place; what it returns joins ``details``, and an exception it
    raises (:class:`ExportError`) leaves nothing written.

    ``record_in``: the folder whose ``export.json`` records the file (with ``weights_sha256``); the
    file is moved into place and recorded under that file's lock, so that a reader checking a file
    against its record (:func:`export.index.recorded_exports`) never sees one without the other.
    """
    spec = get_format(fmt)
    require(fmt)
    if int8 is not None:
        check_int8_formats([fmt])
    try:
        batches = BatchRange.unbounded() if spec.dynamic_batch else as_batch_range(batch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if opset is not None and opset < 18:
        raise ExportError(f"ONNX opset {opset} is too old; use 18 or newer")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    specs = input_specs(input_size)
    if int8 is not None and (len(specs) > 1 or not specs[0].is_float):
        what = f"{len(specs)} inputs" if len(specs) > 1 else f"{specs[0].dtype_name} token ids"
        raise ExportError(
            f"{target.name}: int8 export calibrates one input of images or features, not {what}; "
            "export this front in fp32"
        )
    started = time.perf_counter()
    (example,) = parity_inputs(specs, [batches.low if batches.is_static else _TRACE_BATCH], seed)
    model = with_flat_outputs(model.eval(), example)
    checks = parity_inputs(specs, _check_batches(batches), seed)
    remove_stale_temporaries(target.parent)  # what killed exports left here
    staging = staging_dir(target)
    try:
        staged = staging / target.name  # exporters see the real name and extension
        try:
            metadata = carried.file_metadata() if carried is not None else {}
            details = _write(model, example, staged, fmt, opset, batches, metadata, int8)
        except ExportError:
            raise
        except OSError as exc:
            raise ExportError(
                f"{target.name}: cannot write it in {target.parent} ({exc.strerror or first_line(exc)}); "
                "free space there or choose another --out; nothing was written"
            ) from exc
        except Exception as exc:  # exporters fail in many types; the CLI needs one line
            first = first_line(exc)
            raise ExportError(
                f"{target.name}: {fmt} export failed ({type(exc).__name__}: {first}); nothing was "
                "written; run with --debug for the exporter's traceback"
            ) from exc
        with torch.no_grad():
            expected = [[t.numpy() for _, t in flatten_outputs(model(*x))] for x in checks]
        sides = [staged.with_suffix(ext) for ext in spec.side_exts]  # OpenVINO's .bin weights
        extra = sorted(p.name for p in staging.iterdir() if p != staged and p not in sides)
        if extra:
            raise ExportError(
                f"{target.name}: the {fmt} exporter wrote side files ({', '.join(extra)}) but a "
                "single self-contained file is required; the model is too large for one file"
            )
        runner = load_runner(fmt, staged)
        diff = _max_abs_diff(runner, checks, expected, target, fmt, atol if int8 is None else math.inf)
        # The outputs' scale, so that an absolute difference can be read (1e-6 of what?).
        details["max_abs_output"] = float(
            max(np.abs(e).max() if e.size else 0.0 for outs in expected for e in outs)
        )
        if accept is not None:
            details.update(accept(runner))
        result = ExportResult(
            format=fmt,
            path=target,
            bytes=sum(f.stat().st_size for f in (staged, *sides)),
            max_abs_diff=diff,
            input_size=specs[0].shape,
            batch=batches,
            versions=versions(fmt),
            seconds=time.perf_counter() - started,
            point=point,
            details=details,
            carried=carried,
            precision="fp32" if int8 is None else "int8",
            sha256=sha256_file(staged),
            input_dtype=specs[0].dtype_name,
            more_inputs=specs[1:],
        )
        with contextlib.ExitStack() as stack:
            if record_in is not None:
                stack.enter_context(locked(record_in / INDEX_NAME))
            for side in sides:  # before the main file, whose arrival completes the export
                with atomic_path(target.with_suffix(side.suffix)) as tmp:
                    os.replace(side, tmp)
            with atomic_path(target) as tmp:
                os.replace(staged, tmp)
            if record_in is not None:
                merge_index(record_in, [result.to_entry(weights_sha256)])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _write(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    staged: Path,
    fmt: str,
    opset: int | None,
    batches: BatchRange,
    metadata: dict[str, str],
    int8: Calibration | None,
) -> dict[str, Any]:
    """Write ``model`` to ``staged`` as ``fmt``; with ``int8``, its quantized program (the format's
    int8 flow, recorded with the calibration's size)."""
    spec = get_format(fmt)
    if int8 is None:
        return spec.write(model, example, staged, opset, batches, metadata)
    assert spec.int8 is not None  # export_point checked the format's int8 flow
    details = spec.int8.write(model, example, staged, opset, batches, metadata, int8)
    return {**details, "quantizer": spec.int8.quantizer, "calib_images": int8.images}


def _check_batches(batches: BatchRange) -> tuple[int, ...]:
    """The batch sizes a file accepting ``batches`` is checked at (:data:`_DYNAMIC_CHECK_BATCHES`)."""
    if batches.is_static:
        return (batches.low,)
    wanted = (*_DYNAMIC_CHECK_BATCHES, *(() if batches.high is None else (batches.high,)))
    return tuple(sorted({b for b in wanted if batches.accepts(b)}))


def _max_abs_diff(
    runner: Runner,
    inputs: Sequence[tuple[torch.Tensor, ...]],
    expected: Sequence[Sequence[np.ndarray]],
    target: Path,
    fmt: str,
    atol: float,
) -> float:
    """The largest absolute difference between the file's outputs and PyTorch's, over every output;
    ExportError above ``atol``."""
    worst = 0.0
    for x, wanted in zip(inputs, expected):
        try:
            outputs = runner.outputs(*x)
        except RuntimeError as exc:
            # ExecuTorch 1.5.1 lowers some dynamic batches with memory for fewer images than the bound
            # (a 16-px ResNet20 with dynamic:16 held 15): refused here, not shipped.
            raise ExportError(
                f"{target.name}: the {fmt} file fails at batch {x[0].shape[0]} ({first_line(exc)}); nothing "
                "was written; export with a smaller batch bound"
            ) from None
        if len(outputs) != len(wanted):
            raise ExportError(
                f"{target.name}: the {fmt} file returns {len(outputs)} outputs, PyTorch {len(wanted)}; "
                "nothing was written"
            )
        worst = max(
            [worst, *(_output_diff(got, want, x[0], target, fmt, atol) for got, want in zip(outputs, wanted))]
        )
    return worst


def _output_diff(
    got: np.ndarray, want: np.ndarray, x: torch.Tensor, target: Path, fmt: str, atol: float
) -> float:
    """The largest absolute difference of one output; ExportError for another shape or above ``atol``."""
    if got.shape != want.shape:
        raise ExportError(
            f"{target.name}: the {fmt} file returns shape {tuple(got.shape)} for batch "
            f"{x.shape[0]}, PyTorch {tuple(want.shape)}; nothing was written"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(
            f"{target.name}: the {fmt} file differs from PyTorch by up to {diff:.3g} at batch "
            f"{x.shape[0]} (allowed {atol:g}); nothing was written; report the model, or raise "
            "the tolerance (--atol) if the difference is acceptable"
        )
    return diff


def export_points(
    rt: SlimmableRuntime,
    points: Sequence[FrontPoint],
    formats: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    batch: int | str | BatchRange = 1,
    atol: float = DEFAULT_ATOL,
    opset: int | None = None,
    on_done: Callable[[ExportResult], None] | None = None,
    int8: Calibration | None = None,
    accept: Callable[[Runner], dict[str, Any]] | None = None,
) -> list[ExportResult]:
    """Export every point of ``points`` in every format of ``formats`` to ``out_dir/<point><ext>``.

    First ``out_dir/labels.txt`` is written (:func:`export.metadata.write_labels`: refused, before
    any file, if the folder's holds other classes). Each point is sliced once (``rt.standalone``,
    with its calibrated BN statistics) and each file carries the point's transform, labels and
    provenance (:class:`export.metadata.Carried`); after each file, ``out_dir/export.json`` is
    updated (merged with earlier runs' records, atomically), so an interrupted run keeps the
    records of the files it finished. ``batch``: as for :func:`export_point` (ExecuTorch files
    only). ``on_done`` is called per file. ``int8`` / ``accept``: as for :func:`export_point`; int8
    files are named ``<point>.int8<ext>`` (:func:`export.int8.export_int8_points` measures their top-1).
    """
    for fmt in formats:
        get_format(fmt)
        require(fmt)
    directory = Path(out_dir)
    sha = rt.front.weights_sha256
    names = [
        f"{p.id}{get_format(fmt).ext}" if int8 is None else int8_name(p.id, fmt)
        for p in points
        for fmt in formats
    ]
    _check_owned(directory, names)
    write_labels(directory, rt.class_names)
    results = []
    for p in points:
        model = rt.standalone(p)
        carried = Carried.of(rt, p)
        for fmt in formats:
            res = export_point(
                model,
                rt.input_specs,
                fmt,
                directory / names[points.index(p) * len(formats) + formats.index(fmt)],
                batch=batch,
                atol=atol,
                opset=opset,
                point=p.id,
                carried=carried,
                int8=int8,
                accept=accept,
                record_in=directory,
                weights_sha256=sha,
            )
            results.append(res)
            if on_done is not None:
                on_done(res)
    return results


def _check_owned(directory: Path, names: Sequence[str]) -> None:
    """ExportError, before anything is written, when a file about to be written in ``directory`` exists
    and is not one ``export.json`` there records (a training run's ``checkpoint.pt`` under a point
    named ``checkpoint``, a user's own file): an export replaces only its own files."""
    owned = {e["file"] for e in read_index(directory)}
    for name in names:
        path = directory / name
        if (path.exists() or path.is_symlink()) and name not in owned:
            raise ExportError(
                f"{path}: exists and is not a file pareco exported there ({INDEX_NAME} does not record it); "
                "nothing was exported; choose another --out, or move that file away"
            )


__all__ = ["DEFAULT_ATOL", "ExportError", "ExportResult", "export_point", "export_points", "parity_inputs"]
