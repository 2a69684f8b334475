"""What a valid manifest obeys: the JSON Schema shipped beside this module, then the cross-field rules a
schema cannot express, each a small function named after what it checks.

:func:`validate_schema` checks a document against ``schema.json`` (with :mod:`.json_schema`, so the
runtime needs no ``jsonschema`` package); :func:`check_manifest_consistency` runs the rules in a fixed
order and raises at the first break, so the same file always gets the same message. Every failure is a
:class:`~pareco_runtime.untrusted.FormatError` ``<file>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

from ..space import _TOL as _ALPHA_TOL
from ..untrusted import format_error as _error
from ..weights_file import is_point_id
from . import json_schema
from .paths import inside_folder
from .versions import added_field, manifest_format

# Sizes a manifest may ask for. A model, its example inputs and its exports are built from these
# before any weight is read, so a stranger's manifest must not name gigabytes. ImageNet classifiers
# take 224-600 px and their widest layers have 2,048-4,096 channels; the limits leave room for any
# classifier while one float32 input image stays within 64 MiB (2**24 values).
MAX_CHANNELS = 1 << 16
MAX_INPUT_SIDE = 4096
MAX_INPUT_VALUES = 1 << 24
_PER_PROFILE_FIELDS = ("latency_ms", "energy_mj", "latency_predicted_ms")
_EVALUATION_FIELDS = ("eval_top1", "eval_loss", "eval_metrics")
REEXPORT = "fix the manifest or re-export it"
"""What to do about a manifest that breaks a rule (the end of most messages here)."""

Source = str | os.PathLike[str]


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    json_schema.check_schema(schema)
    return schema


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), a fresh copy of the one shipped in the package."""
    return copy.deepcopy(_schema())


def validate_schema(manifest: Any, source: Source, todo: str) -> None:
    """Raise :class:`FormatError` ``invalid manifest: <first error>`` (with the count of the others) unless
    ``manifest`` is valid against the schema; ``todo`` ends the message."""
    errors = list(json_schema.iter_errors(manifest, _schema()))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _error(source, f"invalid manifest: {errors[0]}{more}", todo)


def check_manifest_consistency(manifest: dict[str, Any], source: Source = "manifest") -> None:
    """Check the cross-field rules of a schema-valid manifest; raise :class:`FormatError` at the first break.

    Rules, in order: sizes are bounded (width_space.full at most :data:`MAX_CHANNELS` each,
    dataset.input_size and preprocess within :func:`check_input_size`); width_space.names, .full and
    .steps have equal lengths, each step divides its full width, and 0 < low <= high; dataset.input_size is
    [T] exactly for integer token ids (dataset.input_dtype); dataset.mean and .std have one value per input
    channel (one for ids);
    class_names, when given, match architecture.kwargs.num_classes when that is an integer; device
    profile names are unique; point ids are unique and file-name safe (no final newline either);
    every point's alpha and channels have one value per width dimension, alpha within [low, high]
    (tolerance 1e-6) and channels at most the full width; every profile a point's latency_ms /
    energy_mj / latency_predicted_ms or a variant's latency_ms names is listed in device_profiles,
    every evaluation its eval_top1 / eval_loss / eval_metrics names in dataset.eval_splits; a point has one variant
    per (precision, backend); every BN statistics file (weights.bn_stats) lies inside the manifest's
    folder, is listed once and is not the weight file, and lists points of this manifest, each in
    one file only; a metric declaration ranks by one of its names, listed once each, and every point
    then has a finite value for every name in ``metrics`` (and in ``selection_metrics`` and each of
    ``eval_metrics`` where it has them) and no ``eval_top1`` / ``eval_loss``, while without one no point
    has any of the three; format_version is at least
    :func:`~.versions.manifest_format`. ``source`` (the file name) starts the message.
    """
    _check_sizes(manifest, source)
    _check_width_space(manifest["width_space"], source)
    _check_dataset(manifest, source)
    profiles = _profile_names(manifest["device_profiles"], source)
    evaluations = set(manifest["dataset"].get("eval_splits", {}))
    ids: set[str] = set()
    for point in manifest["points"]:
        _check_point_id(point["id"], ids, source)
        _check_point_widths(point, manifest["width_space"], source)
        _check_point_names(point, profiles, evaluations, source)
        _check_variants(point, profiles, source)
    _check_stats_files(manifest, ids, source)
    _check_metric(manifest, source)
    _check_format_version(manifest, source)


def check_input_size(size: Sequence[int], where: str, source: Source) -> None:
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


def _check_sizes(manifest: dict[str, Any], source: Source) -> None:
    """The sizes a model and its inputs are built from are within pareco's limits (checked first: nothing
    else may allocate by them)."""
    for i, c in enumerate(manifest["width_space"]["full"]):
        if c > MAX_CHANNELS:
            raise _error(
                source,
                f"width_space.full[{i}] = {c} exceeds the {MAX_CHANNELS} channels pareco allows a layer",
                REEXPORT,
            )
    check_input_size(manifest["dataset"]["input_size"], "dataset.input_size", source)
    preprocess = manifest["dataset"].get("preprocess") or {}
    for side in [preprocess.get("resize") or 1, *preprocess.get("size", [])]:
        if side > MAX_INPUT_SIDE:
            raise _error(
                source,
                f"dataset.preprocess resizes to {side} px, more than the {MAX_INPUT_SIDE} px pareco allows",
                REEXPORT,
            )


def _check_width_space(space: dict[str, Any], source: Source) -> None:
    """One full width per named dimension, 0 < low <= high, and a channel step (where given) per
    dimension that divides its full width."""
    names, full, low, high = space["names"], space["full"], space["low"], space["high"]
    for key in ("full", "steps"):
        if key in space and len(space[key]) != len(names):
            raise _error(
                source,
                f"width_space.{key} has {len(space[key])} values but width_space.names has {len(names)}",
                REEXPORT,
            )
    for i, (step, c) in enumerate(zip(space.get("steps", ()), full)):
        if c % step:
            raise _error(source, f"width_space.steps[{i}] = {step} does not divide full[{i}] = {c}", REEXPORT)
    if not 0 < low <= high:
        raise _error(source, f"width_space needs 0 < low <= high, got low={low:g} high={high:g}", REEXPORT)


def _check_dataset(manifest: dict[str, Any], source: Source) -> None:
    """Token ids (an integer input_dtype) are ``[T]`` and only they are; one mean and std per input
    channel of a float input, no std of 0; one class name per class where both are given."""
    dataset = manifest["dataset"]
    ids = dataset.get("input_dtype", "float32") != "float32"
    if ids != (len(dataset["input_size"]) == 1):
        raise _error(
            source,
            f"dataset.input_size {dataset['input_size']} with input_dtype {dataset.get('input_dtype', 'float32')}: "
            "token ids (int32, int64) are [T], float inputs [C, H, W] or [C, L]",
            REEXPORT,
        )
    in_channels = 1 if ids else dataset["input_size"][0]  # ids are not normalised: one unused pair
    for key in ("mean", "std"):
        if len(dataset[key]) != in_channels:
            raise _error(
                source,
                f"dataset.{key} has {len(dataset[key])} values but input_size has {in_channels} channels",
                REEXPORT,
            )
    if 0 in dataset["std"]:  # the schema allows >= 0; inputs are divided by it
        raise _error(source, "dataset.std holds 0, and inputs are divided by it", REEXPORT)
    num_classes = manifest["architecture"]["kwargs"].get("num_classes")
    class_names = dataset["class_names"]
    if class_names and json_schema.json_type(num_classes) == "integer" and len(class_names) != num_classes:
        raise _error(
            source,
            f"dataset.class_names has {len(class_names)} names but architecture.kwargs."
            f"num_classes is {num_classes}",
            REEXPORT,
        )


def _profile_names(profiles: list[dict[str, Any]], source: Source) -> set[str]:
    """The device profiles' names, each used once."""
    names: set[str] = set()
    for profile in profiles:
        if profile["name"] in names:
            raise _error(source, f"device profile name '{profile['name']}' is used twice", REEXPORT)
        names.add(profile["name"])
    return names


def _check_point_id(pid: str, ids: set[str], source: Source) -> None:
    """``pid`` is file-name safe and not among ``ids`` (the ids before it), to which it is added."""
    if not is_point_id(pid):  # the schema's pattern lets Python's '$' accept a final newline
        raise _error(source, f"point id {pid!r} is not file-name safe", REEXPORT)
    if pid in ids:
        raise _error(source, f"point '{pid}': id is used by more than one point", REEXPORT)
    ids.add(pid)


def _check_point_widths(point: dict[str, Any], space: dict[str, Any], source: Source) -> None:
    """A point's alpha and channels have one value per width dimension, within the width space."""
    pid, names, full, low, high = point["id"], space["names"], space["full"], space["low"], space["high"]
    for key in ("alpha", "channels"):
        if len(point[key]) != len(names):
            raise _error(
                source,
                f"point '{pid}': {key} has {len(point[key])} values but width_space has "
                f"{len(names)} dimensions",
                REEXPORT,
            )
    for i, a in enumerate(point["alpha"]):
        if not low - _ALPHA_TOL <= a <= high + _ALPHA_TOL:
            raise _error(
                source,
                f"point '{pid}': alpha[{i}] = {a:g} ({names[i]}) is outside the width space "
                f"[{low:g}, {high:g}]",
                REEXPORT,
            )
    for i, (c, c_full) in enumerate(zip(point["channels"], full)):
        if c > c_full:
            raise _error(
                source,
                f"point '{pid}': channels[{i}] = {c} exceeds width_space.full[{i}] = {c_full}",
                REEXPORT,
            )


def _check_point_names(
    point: dict[str, Any], profiles: set[str], evaluations: set[str], source: Source
) -> None:
    """Every device profile and evaluation a point's figures name is listed in the manifest."""
    pid = point["id"]
    for key in _PER_PROFILE_FIELDS:
        for name in point.get(key, {}):
            if name not in profiles:
                raise _error(
                    source,
                    f"point '{pid}': {key} names device profile '{name}', which "
                    "device_profiles does not list",
                    REEXPORT,
                )
    for key in _EVALUATION_FIELDS:
        for name in point.get(key, {}):
            if name not in evaluations:
                raise _error(
                    source,
                    f"point '{pid}': {key} names evaluation '{name}', which dataset.eval_splits does not list",
                    REEXPORT,
                )


def _check_variants(point: dict[str, Any], profiles: set[str], source: Source) -> None:
    """A point has one variant per (precision, backend), and its latencies name listed device profiles."""
    pid = point["id"]
    seen: set[tuple[str, str]] = set()
    for variant in point.get("variants", []):
        precision, backend = variant["precision"], variant["backend"]
        if (precision, backend) in seen:
            raise _error(source, f"point '{pid}': two {precision} variants for {backend}", REEXPORT)
        seen.add((precision, backend))
        for name in variant.get("latency_ms", {}):
            if name not in profiles:
                raise _error(
                    source,
                    f"point '{pid}': its {precision} {backend} variant's latency_ms names device profile "
                    f"'{name}', which device_profiles does not list",
                    REEXPORT,
                )


def _check_stats_files(manifest: dict[str, Any], ids: set[str], source: Source) -> None:
    """Each BN statistics file lies inside the folder, is listed once, is not the weight file, and lists
    points of the manifest ``ids``, each in one file only."""
    files = {manifest["weights"]["file"]}
    listed: set[str] = set()
    for entry in manifest["weights"].get("bn_stats", []):
        file = entry["file"]
        inside_folder(source, file, "weights.bn_stats file")
        if file in files:
            raise _error(
                source, f"weights.bn_stats file '{file}' is the weight file or listed twice", REEXPORT
            )
        files.add(file)
        for pid in entry["points"]:
            if pid not in ids:
                raise _error(
                    source,
                    f"weights.bn_stats file '{file}' lists point '{pid}', which points lacks",
                    REEXPORT,
                )
            if pid in listed:
                raise _error(
                    source,
                    f"point '{pid}': its BN statistics are listed in two weights.bn_stats files",
                    REEXPORT,
                )
            listed.add(pid)


def _check_metric(manifest: dict[str, Any], source: Source) -> None:
    """A metric declaration ranks by one of its names, each listed once; every point has a finite figure
    for every name in ``metrics`` (and ``selection_metrics`` and each evaluation of ``eval_metrics``
    where given) and no ``eval_top1`` / ``eval_loss``, and every variant in ``metrics`` and
    ``fp32_metrics`` (not ``top1``); no declaration, no figures (nor ``eval_metrics``), and every variant
    has ``top1`` and ``fp32_top1``."""
    declared = manifest.get("metric")
    if declared is None:
        for point in manifest["points"]:
            for key in ("metrics", "selection_metrics", "eval_metrics"):
                if key in point:
                    raise _error(
                        source,
                        f"point '{point['id']}': {key} given but the manifest declares no metric",
                        REEXPORT,
                    )
            for variant in point.get("variants", []):
                what = _variant_name(point, variant)
                if "metrics" in variant or "fp32_metrics" in variant:
                    raise _error(
                        source, f"{what}: metrics given but the manifest declares no metric", REEXPORT
                    )
                if "top1" not in variant or "fp32_top1" not in variant:
                    raise _error(source, f"{what}: has no top1 and fp32_top1", REEXPORT)
        return
    names, rank = declared["names"], declared["rank"]
    if len(set(names)) != len(names):
        raise _error(source, f"metric.names lists a name twice ({', '.join(names)})", REEXPORT)
    if rank not in names:
        raise _error(
            source, f"metric.rank '{rank}' is not one of metric.names ({', '.join(names)})", REEXPORT
        )
    for point in manifest["points"]:
        for key in ("metrics", "selection_metrics"):
            if key == "selection_metrics" and key not in point:
                continue
            _check_figures(point.get(key, {}), names, f"point '{point['id']}': {key}", source)
        for key in ("eval_top1", "eval_loss"):
            if key in point:
                raise _error(
                    source,
                    f"point '{point['id']}': {key} given but the manifest ranks by {rank}; give eval_metrics",
                    REEXPORT,
                )
        for name, figures in point.get("eval_metrics", {}).items():
            _check_figures(figures, names, f"point '{point['id']}': eval_metrics.{name}", source)
        for variant in point.get("variants", []):
            what = _variant_name(point, variant)
            if "top1" in variant or "fp32_top1" in variant:
                raise _error(
                    source, f"{what}: top1 given but the manifest ranks by {rank}; give metrics", REEXPORT
                )
            for key in ("metrics", "fp32_metrics"):
                _check_figures(variant.get(key, {}), names, f"{what}: {key}", source)


def _variant_name(point: dict[str, Any], variant: dict[str, Any]) -> str:
    return f"point '{point['id']}': its {variant['precision']} {variant['backend']} variant"


def _check_figures(figures: dict[str, Any], names: list[str], where: str, source: Source) -> None:
    """``figures`` holds a finite value for every name of ``names`` and no other; a one-line error
    starting with ``where`` otherwise."""
    for name in names:
        value = figures.get(name)
        if value is None or not math.isfinite(value):
            what = "has no" if value is None else f"has a non-finite ({value})"
            raise _error(source, f"{where}.{name} {what} value", REEXPORT)
    extra = sorted(set(figures) - set(names))
    if extra:
        raise _error(source, f"{where}.{extra[0]} is not one of metric.names", REEXPORT)


def _check_format_version(manifest: dict[str, Any], source: Source) -> None:
    """``format_version`` is one that holds every field the manifest uses (:mod:`.versions`)."""
    version = manifest_format(manifest)
    if manifest["format_version"] < version:
        raise _error(
            source,
            f"format_version {manifest['format_version']} cannot hold {added_field(manifest, version)} "
            f"(format {version})",
            REEXPORT,
        )
