"""pareco's weight file: the safetensors file of a front's shared weights, and the BN statistics files beside it.

The weight file holds the full-width shared weights (the model's ``state_dict`` as-is), each front
point's calibrated BatchNorm statistics under ``bn/<point_id>/<module>.running_mean`` and
``.running_var``, and string metadata: ``pareco_format`` (the format version) and
``pareco_metadata`` (a JSON object: architecture, width space, anything the writer adds). It is
never a pickle, so loading a stranger's file cannot run code.

A *statistics file* holds the BN statistics of points added to a front after training (``pareco
calibrate``, ``pareco specialize``): the same format without the state, its metadata binding it to
one weight file by that file's SHA-256 (:func:`save_stats_file`, :func:`check_binding`), so
statistics calibrated for other weights are refused, not served. Which file holds which point's
statistics is the manifest's business (:mod:`pareco_runtime.manifest.stats_files`).

Files are written atomically (temporary name, then rename). Every problem found while reading raises
:class:`~pareco_runtime.untrusted.FormatError` with a one-line message ``<file>: <what is wrong>;
<what to do>``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .atomic import atomic_write_with
from .untrusted import FormatError, parse_json, regular_file
from .untrusted import format_error as _error

WEIGHTS_FORMAT_VERSION = 1
"""The weight file's format (also a BN statistics file's): unchanged since format 1 of the manifest."""

# A point id names its BN statistics keys here and its statistics file's name, so it must be usable as
# a file name and inside a tensor key; the manifest's schema uses the same pattern.
POINT_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_POINT_ID = re.compile(POINT_ID_PATTERN)
_BN_PREFIX = "bn/"
_BN_STATS = ("running_mean", "running_var")
_META_VERSION = "pareco_format"
_META_JSON = "pareco_metadata"
# The metadata key that binds a statistics file to its weight file (that file's SHA-256).
_BINDING = "weights_sha256"
# safetensors refuses headers above 100 MB; anything larger is not a weight file.
_MAX_HEADER_BYTES = 100_000_000

BNStatsByPoint = Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]]
"""BN statistics as writers pass them: ``{point id: {BN module name: (running_mean, running_var)}}``."""


def is_point_id(text: str) -> bool:
    """Whether ``text`` is a usable point id: :data:`POINT_ID_PATTERN`, without the final newline its
    ``$`` would let through."""
    return _POINT_ID.fullmatch(text) is not None


@dataclass
class WeightFile:
    """A loaded weight file: ``state`` (the state_dict), ``bn_stats`` ({point id: {module: (mean, var)}}),
    ``metadata`` (the JSON object given to :func:`save_weights`) and the ``path`` it was read from."""

    state: dict[str, torch.Tensor]
    bn_stats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    metadata: dict[str, Any]
    path: Path


def save_weights(
    path: str | os.PathLike[str],
    state: dict[str, torch.Tensor],
    bn_stats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]],
    metadata: dict[str, Any],
) -> None:
    """Write a pareco weight file (safetensors) atomically: a crash leaves the old file or the new one.

    ``state`` is stored with its keys unchanged; ``bn_stats[point_id][module] = (mean, var)`` as
    ``bn/<point_id>/<module>.running_mean`` / ``.running_var``; ``metadata`` (a JSON-able dict) as
    JSON string metadata beside ``pareco_format``. Tensors are detached, moved to the CPU and made
    contiguous; tensors sharing storage (tied weights, views of one buffer) are copied apart, so
    they save as they are. Raises :class:`FormatError` for inputs that cannot be written: metadata
    that is not JSON (NaN included), a state key starting with ``bn/``, a point id that is not
    file-name safe, a module name with ``/``, a value that is not a tensor.
    """
    target = Path(path)
    meta_json = _metadata_json(target, metadata)
    tensors: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(_BN_PREFIX):
            raise _error(
                target,
                f"state key '{key}' starts with '{_BN_PREFIX}', which is reserved for "
                "per-point BN statistics",
                "rename that module",
            )
        tensors[key] = value
    tensors.update(_bn_tensors(target, bn_stats))
    prepared = _standalone_tensors(target, tensors)
    file_metadata = {_META_VERSION: str(WEIGHTS_FORMAT_VERSION), _META_JSON: meta_json}

    def write(tmp: Path) -> None:
        save_file(prepared, str(tmp), metadata=file_metadata)
        _sort_metadata_in_header(tmp)

    atomic_write_with(target, write)


def _sort_metadata_in_header(path: Path) -> None:
    """Rewrite the header of the safetensors file at ``path`` in place with its ``__metadata__`` keys sorted.

    safetensors 0.8 writes that map in a random order, new with each save (upstream issue
    safetensors#584): of 20 saves of one file in one process, 2 distinct byte strings came out, so two
    identical trainings got different ``weights_sha256``. The header keeps its length (spaces pad it,
    as safetensors pads it), so the tensors' offsets and bytes are untouched.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        metadata = header.get("__metadata__")
        if not metadata:
            return
        header["__metadata__"] = dict(sorted(metadata.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # a JSON writer escaping differently; the file is valid as it is
            return
        f.seek(8)
        f.write(text.ljust(size, b" "))


def _metadata_json(target: Path, metadata: Any) -> str:
    """``metadata`` as the JSON text the file stores (FormatError when it is not a JSON-able dict)."""
    if not isinstance(metadata, dict):
        raise _error(
            target, f"metadata must be a dict, got {type(metadata).__name__}", "pass a JSON-able dict"
        )
    try:
        return json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _error(
            target,
            f"metadata is not JSON-serialisable ({exc})",
            "pass plain dicts, lists, strings, finite numbers and None",
        ) from None


def _bn_tensors(target: Path, bn_stats: BNStatsByPoint) -> dict[str, Any]:
    """The tensors of ``bn_stats`` by their keys in the file, ``bn/<point_id>/<module>.<statistic>``."""
    tensors: dict[str, Any] = {}
    for point_id, modules in bn_stats.items():
        if not is_point_id(point_id):
            raise _error(
                target,
                f"point id '{point_id}' is not file-name safe (pattern {POINT_ID_PATTERN})",
                "use letters, digits, '_', '.' and '-'",
            )
        for module, pair in modules.items():
            if not module or "/" in module:
                raise _error(
                    target,
                    f"BN module name '{module}' of point '{point_id}' is empty or contains '/'",
                    "use the module names of named_modules()",
                )
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise _error(
                    target,
                    f"BN statistics of point '{point_id}', module '{module}' are not a "
                    "(running_mean, running_var) pair",
                    "pass two tensors",
                )
            for stat, tensor in zip(_BN_STATS, pair):
                tensors[f"{_BN_PREFIX}{point_id}/{module}.{stat}"] = tensor
    return tensors


def _standalone_tensors(target: Path, tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that each own their whole storage (what safetensors can write)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise _error(target, f"'{key}' is a {type(value).__name__}, not a tensor", "pass tensors only")
        tensor = value.detach().cpu()
        storage = tensor.untyped_storage()
        owns_storage = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and storage.nbytes() == tensor.numel() * tensor.element_size()
        )
        if not owns_storage or storage.data_ptr() in seen:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        if tensor.untyped_storage().data_ptr():  # empty tensors have no storage to share
            seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def load_weights(path: str | os.PathLike[str]) -> WeightFile:
    """Read a pareco weight file; never unpickles anything.

    First :func:`read_weight_header` (every check that needs no tensor data: file type, not a
    pickle or zip, a sane header, pareco metadata, format version, complete BN statistics keys,
    dtypes pareco reads), then the tensors, on the CPU. Failures are :class:`FormatError`\\ s that
    say what to do.
    """
    header = read_weight_header(path)
    try:
        with safe_open(str(header.path), framework="pt", device="cpu") as fh:
            names = fh.keys()  # a list: safe_open objects are not iterable
            tensors = {key: fh.get_tensor(key) for key in names}
    except SafetensorError as exc:
        raise _corrupt(header.path, exc) from None
    _check_finite(header.path, tensors)
    state, bn_stats = _split_bn_stats(header.path, tensors)
    return WeightFile(state=state, bn_stats=bn_stats, metadata=header.metadata, path=header.path)


def _check_finite(source: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """FormatError naming the first floating tensor holding a NaN or an infinity: such a weight or BN
    statistic gives NaN outputs at every width without a word, so it is refused at load."""
    for key, tensor in tensors.items():
        # A finite sum proves every element finite; only a non-finite one (NaN, infinity, or an overflow)
        # needs the element-wise test. The sum costs what one elementwise op does (0.12 s for 11.7 M
        # floats on a busy core, against 0.71 s for isfinite().all()).
        if (
            tensor.is_floating_point()
            and not bool(torch.isfinite(tensor.sum()))
            and not bool(torch.isfinite(tensor).all())
        ):
            raise _error(
                source,
                f"tensor '{key}' holds NaN or infinite values",
                "the weights are damaged or the training diverged; restore the file or train again",
            )


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a safetensors header describes it, before any of its data is read."""

    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class WeightHeader:
    """What a weight file holds, from its header alone: :class:`TensorInfo` of each ``state`` tensor and
    of each point's BN statistics (``bn_stats[point][module] = (mean, var)``), the ``metadata`` and the
    ``path``. Building a model from a manifest is checked against it before any memory is spent."""

    state: dict[str, TensorInfo]
    bn_stats: dict[str, dict[str, tuple[TensorInfo, TensorInfo]]]
    metadata: dict[str, Any]
    path: Path
    # The file a point's statistics were read from where it is not ``path`` (a BN statistics file).
    stats_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def tensor_count(self) -> int:
        """How many tensors the file holds."""
        return len(self.state) + 2 * sum(len(modules) for modules in self.bn_stats.values())


# The dtypes a weight file may hold: those a model's parameters and buffers have (num_batches_tracked
# is int64); the others safetensors knows (float8 variants, unsigned ints, complex) no model here has.
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_weight_header(path: str | os.PathLike[str]) -> WeightHeader:
    """The :class:`WeightHeader` of a pareco weight file; no tensor data is read.

    Checks, each failing with a :class:`FormatError` that says what to do: the path is a regular
    file (:func:`~pareco_runtime.untrusted.regular_file`: not missing, a folder, a FIFO, a device
    or a link loop) and not empty; it is not a pickle or zip (``torch.save``) file; its header
    length is sane and fits the file; safetensors can parse the header (corrupt or truncated files
    are reported, not crashed on); it carries pareco metadata (JSON, bounded as
    :func:`~pareco_runtime.untrusted.parse_json` bounds it); its format is not newer than
    :data:`WEIGHTS_FORMAT_VERSION`; the BN statistics keys are complete; every dtype is one a model has.
    """
    source = Path(path)
    _check_safetensors_header(source)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as fh:
            metadata = _parse_weight_metadata(source, fh.metadata() or {})
            names = fh.keys()  # a list: safe_open objects are not iterable
            infos = {key: _tensor_info(source, key, fh.get_slice(key)) for key in names}
    except SafetensorError as exc:
        raise _corrupt(source, exc) from None
    state, bn_stats = _split_bn_stats(source, infos)
    return WeightHeader(state=state, bn_stats=bn_stats, metadata=metadata, path=source)


def _corrupt(source: Path, exc: SafetensorError) -> FormatError:
    return _error(
        source,
        f"corrupt or truncated safetensors file ({exc})",
        "re-export the weights or copy the file again",
    )


def _tensor_info(source: Path, key: str, tensor_slice: Any) -> TensorInfo:
    name = tensor_slice.get_dtype()
    if name not in _DTYPES:
        raise _error(
            source,
            f"tensor '{key}' has dtype {name}, which no pareco model holds",
            "re-export the weights from the trained model",
        )
    return TensorInfo(_DTYPES[name], tuple(int(n) for n in tensor_slice.get_shape()))


_Item = TypeVar("_Item")


def _split_bn_stats(
    source: Path, items: Mapping[str, _Item]
) -> tuple[dict[str, _Item], dict[str, dict[str, tuple[_Item, _Item]]]]:
    """``items`` by key (tensors or their infos) as the state and ``{point: {module: (mean, var)}}``."""
    state: dict[str, _Item] = {}
    pairs: dict[str, dict[str, dict[str, _Item]]] = {}
    for key, item in items.items():
        if not key.startswith(_BN_PREFIX):
            state[key] = item
            continue
        point_id, _, name = key[len(_BN_PREFIX) :].rpartition("/")
        module, _, stat = name.rpartition(".")
        if not point_id or not module or stat not in _BN_STATS:
            raise _error(source, f"malformed BN statistics key '{key}'", "re-export the weights")
        pairs.setdefault(point_id, {}).setdefault(module, {})[stat] = item
    bn_stats: dict[str, dict[str, tuple[_Item, _Item]]] = {}
    for point_id, modules in pairs.items():
        bn_stats[point_id] = {}
        for module, stats in modules.items():
            missing = [stat for stat in _BN_STATS if stat not in stats]
            if missing:
                raise _error(
                    source,
                    f"BN statistics of point '{point_id}', module '{module}' lack {missing[0]}",
                    "re-export the weights",
                )
            bn_stats[point_id][module] = (stats["running_mean"], stats["running_var"])
    return state, bn_stats


def _check_safetensors_header(source: Path) -> None:
    """Reject, before safetensors sees it, a file that is not a regular file, is empty, a pickle or has an
    absurd header.

    A safetensors file starts with an 8-byte little-endian header length followed by a JSON
    object; only a file that does not look like that is sniffed for other formats, since a header
    length can begin with any byte.
    """
    size = regular_file(source, "weight file", "check the path").st_size
    try:
        with open(source, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise _error(
            source, f"cannot read the weight file ({exc.strerror})", "check its permissions"
        ) from None
    if size == 0:
        raise _error(source, "empty file, not a weight file", "re-export the weights or copy the file again")
    header_len = struct.unpack("<Q", head[:8])[0] if size >= 9 else -1
    if 0 <= header_len <= min(size - 8, _MAX_HEADER_BYTES) and head[8:9] == b"{":
        return
    raise _not_safetensors(source, head, size, header_len)


def _not_safetensors(source: Path, head: bytes, size: int, header_len: int) -> FormatError:
    """The error for a file whose first bytes ``head`` are no safetensors header: what it looks like instead."""
    if head[:1] == b"\x80":
        return _error(
            source,
            "is a Python pickle (torch.save?), not a safetensors file, and pareco never "
            "unpickles files since that can run code",
            "export the weights with pareco (safetensors)",
        )
    if head[:2] == b"PK":
        return _error(
            source,
            "is a zip archive (torch.save's format, which holds a pickle), not a "
            "safetensors file, and pareco never unpickles files",
            "export the weights with pareco (safetensors)",
        )
    if head[:1] in (b"{", b"["):
        return _error(source, "is a JSON file, not a safetensors weight file", "pass the .safetensors file")
    if header_len > _MAX_HEADER_BYTES:
        return _error(
            source,
            f"not a safetensors file or corrupt: absurd header length of {header_len} bytes",
            "pass a .safetensors weight file written by pareco",
        )
    if size < 9 or header_len > size - 8:
        return _error(
            source,
            f"truncated or corrupt: {size} bytes, too short for the header it announces",
            "re-export the weights or copy the file again",
        )
    return _error(
        source,
        "not a safetensors file (no JSON header after the header length)",
        "pass a .safetensors weight file written by pareco",
    )


def _parse_weight_metadata(source: Path, file_metadata: dict[str, str]) -> dict[str, Any]:
    version_text = file_metadata.get(_META_VERSION)
    if version_text is None:
        raise _error(
            source,
            "not a pareco weight file (a safetensors file without pareco metadata)",
            "pass the weight file pareco wrote next to the front manifest",
        )
    if not version_text.isdigit() or int(version_text) < 1:
        raise _error(
            source, f"corrupt pareco metadata (format version '{version_text}')", "re-export the weights"
        )
    version = int(version_text)
    if version > WEIGHTS_FORMAT_VERSION:
        raise _error(
            source,
            f"written by a newer pareco (format {version} > {WEIGHTS_FORMAT_VERSION})",
            "upgrade pareco",
        )
    text = file_metadata.get(_META_JSON)
    try:
        metadata = None if text is None else parse_json(text, source, "metadata", "re-export the weights")
    except FormatError as exc:
        raise _error(source, f"corrupt pareco metadata ({exc.what})", "re-export the weights") from None
    if not isinstance(metadata, dict):
        raise _error(
            source,
            f"corrupt pareco metadata ('{_META_JSON}' is missing or not a JSON object)",
            "re-export the weights",
        )
    return metadata


def save_stats_file(
    path: str | os.PathLike[str], bn_stats: BNStatsByPoint, point_ids: Sequence[str], weights_sha256: str
) -> None:
    """Write a BN statistics file atomically: the statistics of ``point_ids`` (taken from ``bn_stats``), bound
    to the weight file whose SHA-256 is ``weights_sha256`` (:func:`check_binding` checks it at load)."""
    ids = list(point_ids)
    save_weights(
        path, {}, {pid: dict(bn_stats[pid]) for pid in ids}, {_BINDING: weights_sha256, "points": ids}
    )


def check_binding(path: Path, metadata: Mapping[str, object], weights_file: str, weights_sha256: str) -> None:
    """Raise :class:`FormatError` unless the statistics file at ``path`` (its ``metadata``) is bound to the
    weight file ``weights_file`` of SHA-256 ``weights_sha256``."""
    bound = metadata.get(_BINDING)
    if bound != weights_sha256:
        raise _error(
            path,
            f"BN statistics of another weight file (calibrated for sha256 {str(bound)[:12]}..., but "
            f"{weights_file} has {weights_sha256[:12]}...)",
            "restore the weight file it was made for, or calibrate its points again",
        )
