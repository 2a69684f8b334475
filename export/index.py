"""``export.json``: the record of the files in an export folder.

A JSON list with one object per exported file: ``point``, ``format``, ``file`` (relative to the
folder), ``bytes``, ``max_abs_diff``, ``versions``, ``input_size``, ``batch`` (the batch sizes
the file accepts, as ``--batch`` spells them: the static size N, ``"dynamic:MAX"`` for 1 to MAX,
or ``"dynamic"`` for any; absent in records of older versions, read as any batch for ONNX,
TorchScript and ``.pt2`` and as unknown for ExecuTorch), ``seconds``, ``created``,
``weights_sha256`` (the weight file the point was sliced from, so a later run can tell stale files),
``channels`` (the point's channel counts; absent in records of older versions), ``preprocess`` (the whole evaluation transform the file's input needs:
:meth:`pareco_runtime.preprocess.Preprocess.describe`), ``labels`` (the folder's ``labels.txt``,
None when the front names no classes), ``max_abs_output`` (the scale the difference is read
against) and format details (``opset``, ``undelegated_ops``). Records of older versions lack
``preprocess`` and ``labels`` (their files carry neither) and are read as they are. ``precision``:
"fp32", or "int8" for a quantized file (``pareco export --int8``, named ``<point>.int8<ext>``, with
its ``top1`` and ``fp32_top1`` measured on the images of ``split``); records of older versions lack
it and are fp32. A run merges its records into the existing list: a record for the same point,
format and precision replaces the old one.
Written atomically, under the file's lock (:mod:`pareco_runtime.filelock`), so exports into one folder at
the same time keep every record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pareco_runtime.atomic import atomic_write_text
from pareco_runtime.filelock import locked
from pareco_runtime.untrusted import FormatError, read_json

from .batch import BatchRange, recorded_batch
from .formats import ExportError, get_format

INDEX_NAME = "export.json"


def read_index(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``directory/export.json`` ([] when there is none); ExportError if it is not one (also
    a FIFO, a device, a file over 64 MiB or JSON nested too deep: :func:`~pareco_runtime.untrusted.read_json`)."""
    path = Path(directory) / INDEX_NAME
    if not os.path.lexists(path):
        return []
    try:
        data = read_json(path, "export record", "move it away or delete it")
    except FormatError as exc:
        raise ExportError(
            f"{path}: not a valid export record ({exc.what}); move it away or delete it"
        ) from None
    if not isinstance(data, list) or not all(
        isinstance(e, dict) and {"point", "format", "file"} <= set(e) for e in data
    ):
        raise ExportError(
            f"{path}: not a pareco export record (expected a list of objects with point, format "
            "and file); move it away or delete it"
        )
    return data


def _key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """What identifies a record: point, format and precision (fp32 where a record of an older version lacks it)."""
    return str(entry["point"]), str(entry["format"]), str(entry.get("precision", "fp32"))


def merge_index(directory: str | os.PathLike[str], entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge ``entries`` into ``directory/export.json`` (same point, format and precision: replaced);
    returns the list.

    The file is locked from the read to the atomic rename, so concurrent merges all survive.
    """
    path = Path(directory) / INDEX_NAME
    new = {_key(e): e for e in entries}
    with locked(path):
        kept = [e for e in read_index(directory) if _key(e) not in new]
        merged = sorted(kept + list(new.values()), key=_key)
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
    return merged


def _entry_batches(entry: dict[str, Any]) -> BatchRange | None:
    """The batch sizes a record's file accepts (:func:`export.batch.recorded_batch`); None if unknown."""
    return recorded_batch(entry.get("batch"), get_format(str(entry["format"])).dynamic_batch)


def recorded_exports(
    directory: str | os.PathLike[str],
    point: str,
    fmt: str,
    weights_sha256: str,
    channels: Sequence[int] | None = None,
    precision: str = "fp32",
) -> list[tuple[Path, BatchRange | None]]:
    """The files of earlier exports of ``point`` as ``fmt`` in ``precision`` from the same weight file
    that are on disk in ``directory``, each with the batch sizes it accepts (None: not recorded);
    with ``channels``, only those recorded with exactly these channel counts."""
    found = []
    for e in read_index(directory):
        if _key(e) != (point, fmt, precision) or e.get("weights_sha256") != weights_sha256:
            continue
        if channels is not None and e.get("channels") != list(channels):
            continue
        path = Path(directory) / e["file"]
        if path.is_file() and path.parent == Path(directory):
            found.append((path, _entry_batches(e)))
    return found


def find_export(
    directory: str | os.PathLike[str],
    point: str,
    fmt: str,
    weights_sha256: str,
    batch: int,
    precision: str = "fp32",
) -> Path | None:
    """The file of an earlier export of ``point`` as ``fmt`` in ``precision`` usable at ``batch``, or None.

    Usable: recorded in ``export.json`` for the same weight file, present on disk, and recorded as
    accepting ``batch`` (any batch, a range holding it, or exactly it).
    """
    for path, batches in recorded_exports(directory, point, fmt, weights_sha256, precision=precision):
        if batches is not None and batches.accepts(batch):
            return path
    return None
