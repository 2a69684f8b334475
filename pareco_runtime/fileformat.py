"""pareco's on-disk formats: the safetensors weight file and the JSON front manifest.

The weight file holds the full-width shared weights (the model's ``state_dict`` as-is), each front
point's calibrated BatchNorm statistics under ``bn/<point_id>/<module>.running_mean`` and
``.running_var``, and string metadata: ``pareco_format`` (the format version) and
``pareco_metadata`` (a JSON object: architecture, width space, anything the writer adds). It is
never a pickle, so loading a stranger's file cannot run code. A BN statistics file (points added
after training, :mod:`pareco_runtime.point_stats`) is the same format without the state.

The manifest is JSON, validated against ``manifest.schema.json`` (shipped with the package) by
:mod:`pareco_runtime.schema_check`, then by :func:`check_manifest_consistency` for the rules a
schema cannot express. It names its weight file relative to its own folder, with a SHA-256. This
module reads and writes manifests as dicts; their layout, as typed fields, is
:class:`pareco_runtime.front_file.Front`, which every other reader and writer goes through.

Both files are written atomically (temporary name, then rename). Every problem found while reading
raises :class:`FormatError` with a one-line message ``<file>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from . import schema_check
from .atomic import atomic_write_text, atomic_write_with
from .space import _TOL as _ALPHA_TOL
from .untrusted import FormatError, parse_json, read_json, regular_file
from .untrusted import format_error as _error

FORMAT_VERSION = 3
"""The newest manifest format this pareco reads and writes; a manifest is written in the oldest format
that holds its fields (:func:`manifest_format`)."""
WEIGHTS_FORMAT_VERSION = 1
"""The weight file's format (also a BN statistics file's): unchanged since format 1 of the manifest."""

# A point id must be usable as a file name and inside a tensor key: the schema uses the same pattern.
POINT_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_POINT_ID = re.compile(POINT_ID_PATTERN)
_BN_PREFIX = "bn/"
_BN_STATS = ("running_mean", "running_var")
_META_VERSION = "pareco_format"
_META_JSON = "pareco_metadata"
# safetensors refuses headers above 100 MB; anything larger is not a weight file.
_MAX_HEADER_BYTES = 100_000_000
# Sizes a manifest may ask for. A model, its example inputs and its exports are built from these
# before any weight is read, so a stranger's manifest must not name gigabytes. ImageNet classifiers
# take 224-600 px and their widest layers have 2,048-4,096 channels; the limits leave room for any
# classifier while one float32 input image stays within 64 MiB (2**24 values).
MAX_CHANNELS = 1 << 16
MAX_INPUT_SIDE = 4096
MAX_INPUT_VALUES = 1 << 24
_PER_PROFILE_FIELDS = ("latency_ms", "energy_mj", "latency_predicted_ms")
_REEXPORT = "fix the manifest or re-export it"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of the file's bytes, read in chunks (``OSError`` if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Weight file


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
    if not isinstance(metadata, dict):
        raise _error(
            target, f"metadata must be a dict, got {type(metadata).__name__}", "pass a JSON-able dict"
        )
    try:
        meta_json = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _error(
            target,
            f"metadata is not JSON-serialisable ({exc})",
            "pass plain dicts, lists, strings, finite numbers and None",
        ) from None
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
    for point_id, modules in bn_stats.items():
        if not _POINT_ID.fullmatch(point_id):
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
    prepared = _standalone_tensors(target, tensors)
    file_metadata = {_META_VERSION: str(WEIGHTS_FORMAT_VERSION), _META_JSON: meta_json}
    atomic_write_with(target, lambda tmp: save_file(prepared, str(tmp), metadata=file_metadata))


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
    state, bn_stats = _split_bn_stats(header.path, tensors)
    return WeightFile(state=state, bn_stats=bn_stats, metadata=header.metadata, path=header.path)


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
    if head[:1] == b"\x80":
        raise _error(
            source,
            "is a Python pickle (torch.save?), not a safetensors file, and pareco never "
            "unpickles files since that can run code",
            "export the weights with pareco (safetensors)",
        )
    if head[:2] == b"PK":
        raise _error(
            source,
            "is a zip archive (torch.save's format, which holds a pickle), not a "
            "safetensors file, and pareco never unpickles files",
            "export the weights with pareco (safetensors)",
        )
    if head[:1] in (b"{", b"["):
        raise _error(source, "is a JSON file, not a safetensors weight file", "pass the .safetensors file")
    if header_len > _MAX_HEADER_BYTES:
        raise _error(
            source,
            f"not a safetensors file or corrupt: absurd header length of {header_len} bytes",
            "pass a .safetensors weight file written by pareco",
        )
    if size < 9 or header_len > size - 8:
        raise _error(
            source,
            f"truncated or corrupt: {size} bytes, too short for the header it announces",
            "re-export the weights or copy the file again",
        )
    raise _error(
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


# --------------------------------------------------------------------------------------------
# Front manifest


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("pareco_runtime").joinpath("manifest.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    schema_check.check_schema(schema)
    return schema


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), a fresh copy of the one shipped in the package."""
    return copy.deepcopy(_schema())


def _validate(manifest: Any, source: str | os.PathLike[str], todo: str) -> None:
    errors = list(schema_check.iter_errors(manifest, _schema()))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _error(source, f"invalid manifest: {errors[0]}{more}", todo)


def check_manifest_consistency(manifest: dict[str, Any], source: str | os.PathLike[str] = "manifest") -> None:
    """Check the cross-field rules of a schema-valid manifest; raise :class:`FormatError` at the first break.

    Rules: width_space.names and .full have equal lengths and 0 < low <= high; dataset.mean and
    .std have one value per input channel; class_names, when given, match
    architecture.kwargs.num_classes when that is an integer; device profile names are unique;
    point ids are unique and file-name safe (no final newline either); every point's alpha and
    channels have one value per width dimension, alpha within [low, high] (tolerance 1e-6) and
    channels at most the full width; every profile a point's latency_ms / energy_mj /
    latency_predicted_ms names is listed in device_profiles, every evaluation its eval_top1 /
    eval_loss names in dataset.eval_splits; every BN statistics file (weights.bn_stats) lies inside
    the manifest's folder, is listed once and is not the weight file, and lists points of this
    manifest, each in one file only; format_version is at least :func:`manifest_format`.
    ``source`` (the file name) starts the message. Sizes are bounded first: width_space.full at most
    :data:`MAX_CHANNELS` each, dataset.input_size and preprocess within :func:`check_input_size`.
    """
    space = manifest["width_space"]
    names, full, low, high = space["names"], space["full"], space["low"], space["high"]
    for i, c in enumerate(full):
        if c > MAX_CHANNELS:
            raise _error(
                source,
                f"width_space.full[{i}] = {c} exceeds the {MAX_CHANNELS} channels pareco allows a layer",
                _REEXPORT,
            )
    check_input_size(manifest["dataset"]["input_size"], "dataset.input_size", source)
    preprocess = manifest["dataset"].get("preprocess") or {}
    for side in [preprocess.get("resize") or 1, *preprocess.get("size", [])]:
        if side > MAX_INPUT_SIDE:
            raise _error(
                source,
                f"dataset.preprocess resizes to {side} px, more than the {MAX_INPUT_SIDE} px pareco allows",
                _REEXPORT,
            )
    if len(full) != len(names):
        raise _error(
            source,
            f"width_space.full has {len(full)} values but width_space.names has {len(names)}",
            _REEXPORT,
        )
    if not 0 < low <= high:
        raise _error(source, f"width_space needs 0 < low <= high, got low={low:g} high={high:g}", _REEXPORT)
    dataset = manifest["dataset"]
    in_channels = dataset["input_size"][0]
    for key in ("mean", "std"):
        if len(dataset[key]) != in_channels:
            raise _error(
                source,
                f"dataset.{key} has {len(dataset[key])} values but input_size has {in_channels} channels",
                _REEXPORT,
            )
    num_classes = manifest["architecture"]["kwargs"].get("num_classes")
    class_names = dataset["class_names"]
    if class_names and schema_check.json_type(num_classes) == "integer" and len(class_names) != num_classes:
        raise _error(
            source,
            f"dataset.class_names has {len(class_names)} names but architecture.kwargs."
            f"num_classes is {num_classes}",
            _REEXPORT,
        )
    profiles: set[str] = set()
    for profile in manifest["device_profiles"]:
        if profile["name"] in profiles:
            raise _error(source, f"device profile name '{profile['name']}' is used twice", _REEXPORT)
        profiles.add(profile["name"])
    evaluations = set(dataset.get("eval_splits", {}))
    ids: set[str] = set()
    for point in manifest["points"]:
        _check_point(point, names, full, low, high, (profiles, evaluations), ids, source)
    _check_stats_files(manifest, ids, source)
    for version in (3, 2):
        needed = _format_field(manifest, version)
        if needed is not None and manifest["format_version"] < version:
            raise _error(
                source,
                f"format_version {manifest['format_version']} cannot hold {needed} (format {version})",
                _REEXPORT,
            )


# What each format added, by the object that holds it: a manifest with none of a format's fields is
# readable by the pareco versions before it (an app on a phone keeps the runtime it shipped with).
_FORMAT_FIELDS = {
    2: (
        ("weights", ("bn_stats",)),
        ("dataset", ("eval_splits",)),
        ("points", ("origin", "eval_top1", "eval_loss")),
    ),
    3: (("points", ("variants",)),),
}


def _format_field(manifest: dict[str, Any], version: int) -> str | None:
    """The first field of a schema-valid manifest that format ``version`` added (as ``weights.bn_stats``),
    else None."""
    for part, keys in _FORMAT_FIELDS[version]:
        objects = manifest[part] if part == "points" else [manifest[part]]
        for key in keys:
            if any(key in obj for obj in objects):
                return f"{part}[].{key}" if part == "points" else f"{part}.{key}"
    return None


def manifest_format(manifest: dict[str, Any]) -> int:
    """The oldest format that holds a schema-valid manifest's fields: 3 where points have quantized
    variants, 2 where it has BN statistics files, off-front points or evaluations, else 1."""
    for version in (3, 2):
        if _format_field(manifest, version) is not None:
            return version
    return 1


def _check_stats_files(manifest: dict[str, Any], ids: set[str], source: str | os.PathLike[str]) -> None:
    files = {manifest["weights"]["file"]}
    listed: set[str] = set()
    for entry in manifest["weights"].get("bn_stats", []):
        file = entry["file"]
        inside_folder(source, file, "weights.bn_stats file")
        if file in files:
            raise _error(
                source, f"weights.bn_stats file '{file}' is the weight file or listed twice", _REEXPORT
            )
        files.add(file)
        for pid in entry["points"]:
            if pid not in ids:
                raise _error(
                    source,
                    f"weights.bn_stats file '{file}' lists point '{pid}', which points lacks",
                    _REEXPORT,
                )
            if pid in listed:
                raise _error(
                    source,
                    f"point '{pid}': its BN statistics are listed in two weights.bn_stats files",
                    _REEXPORT,
                )
            listed.add(pid)


def check_input_size(size: Sequence[int], where: str, source: str | os.PathLike[str]) -> None:
    """Raise :class:`FormatError` unless an input size ``[C, H, W]`` has each side at most
    :data:`MAX_INPUT_SIDE` and at most :data:`MAX_INPUT_VALUES` values (``where`` names the field)."""
    values = 1
    for n in size:
        values *= n
    if max(size[1:], default=0) > MAX_INPUT_SIDE or values > MAX_INPUT_VALUES:
        raise _error(
            source,
            f"{where} {list(size)} exceeds pareco's input limits ({MAX_INPUT_SIDE} px a side, "
            f"{MAX_INPUT_VALUES} values an image)",
            "use the manifest pareco wrote for this model",
        )


def _check_point(
    point: dict[str, Any],
    names: list[str],
    full: list[int],
    low: float,
    high: float,
    names_in_use: tuple[set[str], set[str]],
    ids: set[str],
    source: str | os.PathLike[str],
) -> None:
    """One point's rules; ``names_in_use``: (device profile names, evaluation names) it may name."""
    profiles, evaluations = names_in_use
    pid = point["id"]
    if not _POINT_ID.fullmatch(pid):  # the schema's pattern lets Python's '$' accept a final newline
        raise _error(source, f"point id {pid!r} is not file-name safe", _REEXPORT)
    if pid in ids:
        raise _error(source, f"point '{pid}': id is used by more than one point", _REEXPORT)
    ids.add(pid)
    for key in ("alpha", "channels"):
        if len(point[key]) != len(names):
            raise _error(
                source,
                f"point '{pid}': {key} has {len(point[key])} values but width_space has "
                f"{len(names)} dimensions",
                _REEXPORT,
            )
    for i, a in enumerate(point["alpha"]):
        if not low - _ALPHA_TOL <= a <= high + _ALPHA_TOL:
            raise _error(
                source,
                f"point '{pid}': alpha[{i}] = {a:g} ({names[i]}) is outside the width space "
                f"[{low:g}, {high:g}]",
                _REEXPORT,
            )
    for i, (c, c_full) in enumerate(zip(point["channels"], full)):
        if c > c_full:
            raise _error(
                source,
                f"point '{pid}': channels[{i}] = {c} exceeds width_space.full[{i}] = {c_full}",
                _REEXPORT,
            )
    for key in _PER_PROFILE_FIELDS:
        for name in point.get(key, {}):
            if name not in profiles:
                raise _error(
                    source,
                    f"point '{pid}': {key} names device profile '{name}', which "
                    "device_profiles does not list",
                    _REEXPORT,
                )
    for key in ("eval_top1", "eval_loss"):
        for name in point.get(key, {}):
            if name not in evaluations:
                raise _error(
                    source,
                    f"point '{pid}': {key} names evaluation '{name}', which dataset.eval_splits does not list",
                    _REEXPORT,
                )
    seen: set[tuple[str, str]] = set()
    for variant in point.get("variants", []):
        precision, backend = variant["precision"], variant["backend"]
        if (precision, backend) in seen:
            raise _error(source, f"point '{pid}': two {precision} variants for {backend}", _REEXPORT)
        seen.add((precision, backend))
        for name in variant.get("latency_ms", {}):
            if name not in profiles:
                raise _error(
                    source,
                    f"point '{pid}': its {precision} {backend} variant's latency_ms names device profile "
                    f"'{name}', which device_profiles does not list",
                    _REEXPORT,
                )


def save_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Validate ``manifest`` and write it as indented JSON, atomically.

    The manifest is first turned into plain JSON (tuples become lists; NaN or infinity is refused,
    use null), then checked against the schema, :func:`check_manifest_consistency` and the weight
    path rule of :func:`weights_path`; any failure raises :class:`FormatError` and writes nothing.
    The weight file itself is not read.
    """
    target = Path(path)
    try:
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise _error(
            target,
            f"manifest is not JSON-serialisable ({exc})",
            "use dicts, lists, strings, finite numbers and None (null) only",
        ) from None
    document = json.loads(text)
    _validate(document, target, "fix the manifest before saving it")
    check_manifest_consistency(document, target)
    weights_path(target, document)
    atomic_write_text(target, text)


def load_manifest(path: str | os.PathLike[str], verify_weights: bool = True) -> dict[str, Any]:
    """Read, check and return a front manifest (a dict); every failure is a :class:`FormatError`.

    Checks in order: the path is a regular file of at most
    :data:`~pareco_runtime.untrusted.MAX_JSON_BYTES` (not missing, a folder, a FIFO, a device or a
    link loop); it is JSON nested at most :data:`~pareco_runtime.untrusted.MAX_JSON_DEPTH` levels
    (with the line and column of a syntax error; duplicate keys and NaN/Infinity refused); the top
    level is an object; ``format_version`` is not
    newer than :data:`FORMAT_VERSION` (so a newer file asks for an upgrade, not a schema fix); the
    schema (the message names the field path); :func:`check_manifest_consistency`; the weight file
    lies inside the manifest's folder (see :func:`weights_path`); with ``verify_weights``, the
    weight file is a regular file and its SHA-256 equals ``weights.sha256``, and so is and does each
    BN statistics file of ``weights.bn_stats``.
    """
    source = Path(path)
    manifest = read_json(source, "manifest file", "pass the .front.json file pareco wrote, or re-export it")
    if not isinstance(manifest, dict):
        kind = schema_check.json_type(manifest)
        raise _error(
            source,
            f"not a front manifest (the top level is a JSON {kind}, expected an object)",
            "pass the .front.json file pareco wrote",
        )
    version = manifest.get("format_version")
    if (
        isinstance(version, (int, float))
        and schema_check.json_type(version) == "integer"
        and version > FORMAT_VERSION
    ):
        raise _error(
            source, f"written by a newer pareco (format {int(version)} > {FORMAT_VERSION})", "upgrade pareco"
        )
    _validate(manifest, source, _REEXPORT)
    check_manifest_consistency(manifest, source)
    weights = weights_path(source, manifest)
    if verify_weights:
        _verify_file(source, weights, manifest["weights"]["sha256"], "weight file", "re-export or re-train")
        for entry in manifest["weights"].get("bn_stats", []):
            _verify_file(
                source,
                inside_folder(source, entry["file"], "weights.bn_stats file"),
                entry["sha256"],
                "BN statistics file",
                f"restore it, or remove its points ({', '.join(entry['points'])}) and its weights.bn_stats "
                "entry from the manifest and calibrate them again",
            )
    return manifest


def _verify_file(source: Path, path: Path, sha256: str, what: str, todo: str) -> None:
    """``path`` (a file the manifest ``source`` names) exists, is a regular file and has ``sha256``."""
    if not os.path.lexists(path):
        raise _error(source, f"{what} {path} not found", "put it beside the manifest")
    regular_file(path, what, f"put the {what} pareco wrote beside the manifest")
    if sha256_file(path) != sha256:
        raise _error(path, f"{what} changed or corrupt (sha256 mismatch)", todo)


def weights_path(manifest_path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Absolute path of the weight file a schema-valid manifest names, inside the manifest's folder.

    ``weights.file`` must be a file name or a '/'-separated relative path that stays inside the
    folder holding the manifest (:func:`inside_folder`).
    """
    return inside_folder(manifest_path, manifest["weights"]["file"], "weights.file")


def inside_folder(manifest_path: str | os.PathLike[str], file: str, where: str) -> Path:
    """Absolute path of ``file``, a file the manifest names in field ``where``, inside the manifest's folder.

    ``file`` must be a file name or a '/'-separated relative path that stays inside the folder holding
    the manifest; an absolute path, a drive, a backslash or a '..' leaving that folder raises
    :class:`FormatError`. The check is on the text of the path (symbolic links placed in the folder
    by its owner are followed when the file is opened).
    """
    parts = _inside_parts(file)
    if parts is None:
        raise _error(
            manifest_path,
            f"{where} '{file}' is not a file inside the manifest's folder, and "
            "pareco refuses to read weights outside its folder",
            "put the file beside the manifest and give its name, or a relative path with '/'",
        )
    return Path(os.path.abspath(manifest_path)).parent.joinpath(*parts)


def _inside_parts(file: str) -> list[str] | None:
    """The normalised components of a relative path that stays inside its folder, else None."""
    if "\\" in file or "\x00" in file or PureWindowsPath(file).drive or PurePosixPath(file).is_absolute():
        return None
    parts: list[str] = []
    for part in PurePosixPath(file).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return parts or None
