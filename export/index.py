"""``export.json``: the record of the files in an export folder.

A JSON list with one object per exported file: ``point``, ``format``, ``file`` (relative to the
folder), ``bytes``, ``max_abs_diff``, ``versions``, ``input_size``, ``input_dtype`` (only where the
input is not float32: ``int64`` / ``int32`` token ids), ``input_sizes`` / ``input_dtypes`` (only for a
network of several inputs: each one's, in its ``forward``'s order), ``batch`` (the batch sizes
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
``sha256``: the file's own SHA-256, taken before it was moved into place.

Written atomically, under the file's lock (:mod:`pareco_runtime.filelock`), so exports into one folder at
the same time keep every record; an export moves its file into place and records it under that lock.

Read, every record is checked field by field (:func:`read_index`): a field of the wrong type
(``"file": null``), a file name that leaves the folder or a number that is not finite is one line
naming the file, the record and the field. A file is used for a record (:func:`recorded_exports`)
only when its bytes hash to the record's ``sha256`` (read under the same lock), so a program copied
over another point's, an int8 file over an fp32 one or garbage under a valid record is refused
before any runtime loads it; a record without ``sha256`` (older versions) names no file that can be
trusted and is passed over (the point is exported again).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pareco_runtime.atomic import atomic_write_text
from pareco_runtime.filelock import locked
from pareco_runtime.inputs import DTYPES
from pareco_runtime.untrusted import FormatError, read_json, sha256_file

from .batch import BatchRange, recorded_batch
from .formats import ExportError, get_format
from .metadata import carried_identity

INDEX_NAME = "export.json"
_BAD_RECORD_TODO = "move it away or delete it, and export again"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _is_file_name(value: object) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.match(value) is not None


# What each field a reader uses must be, and how a wrong one is described; absent optional fields
# are records of older versions. A number field must be finite (JSON's 1e400 parses to infinity).
_REQUIRED = ("point", "format", "file")
_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "point": (_is_text, "a string"),
    "format": (_is_text, "a string"),
    "file": (_is_file_name, "a file name in the folder"),
    "precision": (_is_text, "a string"),
    "weights_sha256": (_is_text, "a string"),
    "sha256": (_is_sha256, "a SHA-256 in 64 lower-case hex digits"),
    "channels": (_is_count_list, "a list of channel counts"),
    "input_size": (_is_count_list, "a list of sizes"),
    "input_dtype": (lambda v: isinstance(v, str) and v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "input_sizes": (
        lambda v: isinstance(v, list) and all(map(_is_count_list, v)),
        "a list of lists of sizes",
    ),
    "input_dtypes": (
        lambda v: isinstance(v, list) and all(isinstance(d, str) and d in DTYPES for d in v),
        "a list of dtype names",
    ),
    **dict.fromkeys(
        ("bytes", "max_abs_diff", "max_abs_output", "seconds", "top1", "fp32_top1"),
        (_is_number, "a finite number"),
    ),
}


def _record_problem(entry: object) -> str | None:
    """What is wrong with one record of ``export.json`` (None: nothing)."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object"
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        return f"has no {', '.join(repr(k) for k in missing)}"
    for name, (fits, expected) in _FIELDS.items():
        if name in entry and not fits(entry[name]):
            return f"field '{name}' is {json.dumps(entry[name])[:40]}, not {expected}"
    return None


def read_index(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``directory/export.json`` ([] when there is none); ExportError if it is not one (also
    a FIFO, a device, a file over 64 MiB or JSON nested too deep: :func:`~pareco_runtime.untrusted.read_json`),
    or when a record has a field of the wrong type or a number that is not finite (one line naming
    the record and the field)."""
    path = Path(directory) / INDEX_NAME
    if not os.path.lexists(path):
        return []
    try:
        data = read_json(path, "export record", "move it away or delete it")
    except FormatError as exc:
        raise ExportError(
            f"{path}: not a valid export record ({exc.what}); move it away or delete it"
        ) from None
    if not isinstance(data, list):
        raise ExportError(
            f"{path}: not a pareco export record (expected a list of objects with point, format "
            "and file); move it away or delete it"
        )
    for n, entry in enumerate(data, start=1):
        problem = _record_problem(entry)
        if problem is not None:
            raise ExportError(f"{path}: record {n} {problem}; {_BAD_RECORD_TODO}")
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
    with ``channels``, only those recorded with exactly these channel counts.

    A file is returned only if its bytes hash to its record's ``sha256`` (records without one are
    passed over); one that does not is an :class:`ExportError` naming it, so no runtime ever loads
    a program that is not the one recorded for the point.
    """
    folder = Path(directory)
    found: list[tuple[Path, BatchRange | None]] = []
    if not os.path.lexists(folder / INDEX_NAME):
        return found  # nothing recorded (and no lock file made in a folder only looked at)
    with _reading_lock(folder / INDEX_NAME):
        for e in read_index(folder):
            if _key(e) != (point, fmt, precision) or e.get("weights_sha256") != weights_sha256:
                continue
            if channels is not None and e.get("channels") != list(channels):
                continue
            path = folder / e["file"]
            if "sha256" in e and path.is_file():
                _check_file(folder, path, e)
                found.append((path, _entry_batches(e)))
    return found


@contextlib.contextmanager
def _reading_lock(path: Path) -> Iterator[None]:
    """The lock of ``path`` to read it under (an export moves its file and records it under this
    lock); a folder the user may not write (a read-only install) is read without it, as nothing
    there can be written either."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path))
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        yield


def _check_file(folder: Path, path: Path, entry: dict[str, Any]) -> None:
    """ExportError unless ``path`` hashes to ``entry["sha256"]`` (its record in ``folder/export.json``)
    and the point and weight file it carries (where its format lets them be read) are the record's."""
    todo = "delete it and export the point again (the runtime re-exports a deleted program on first use)"
    what = f"{entry.get('precision', 'fp32')} point {entry['point']}"
    on_disk = sha256_file(path)
    if on_disk != entry["sha256"]:
        raise ExportError(
            f"{path}: not the file {folder / INDEX_NAME} records for {what} (SHA-256 "
            f"{on_disk[:12]}..., recorded {entry['sha256'][:12]}...): it was changed or replaced "
            f"after export; {todo}"
        )
    carried = carried_identity(path, str(entry["format"])) or {}
    expected = {"pareco.point": entry["point"], "pareco.weights_sha256": entry.get("weights_sha256")}
    for key, value in carried.items():
        if value != expected[key]:
            raise ExportError(
                f"{path}: carries {key} {value[:16]!r} but is recorded in {folder / INDEX_NAME} as "
                f"{what}'s file; {todo}"
            )


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
