"""The manifest's format versions: what each added, which one a manifest needs, and refusing newer ones.

Format 1 is the first; format 2 added BN statistics files (``weights.bn_stats``), off-front points
(a point's ``origin``) and evaluations on named test sets (``dataset.eval_splits``, a point's
``eval_top1`` / ``eval_loss``); format 3 added quantized variants (a point's ``variants``); format 4
added fronts ranked by a metric of their own (``metric``, a point's ``metrics`` /
``selection_metrics``); format 5 added channel steps (``width_space.steps``: a dimension slimmed in
whole groups of a grouped conv); format 6 added integer inputs (``dataset.input_dtype``: token ids
of shape ``[T]``); format 7 added evaluations of a front ranked by its own metric (a point's
``eval_metrics``). Each
format only added optional fields, so a manifest of an older format is a valid one of every newer
format and reading it needs no migration. Writers use the oldest format that holds a manifest's
fields (:func:`manifest_format`), so a front using no new field stays readable by the pareco versions
before it (an app on a phone keeps the runtime it shipped with).
"""

from __future__ import annotations

import os
from typing import Any

from ..untrusted import format_error as _error
from .json_schema import json_type

FORMAT_VERSION = 7
"""The newest manifest format this pareco reads and writes; a manifest is written in the oldest format
that holds its fields (:func:`manifest_format`)."""

# What each format added, by the object that holds it ("points": every point, "manifest": the top level).
_FORMAT_FIELDS = {
    2: (
        ("weights", ("bn_stats",)),
        ("dataset", ("eval_splits",)),
        ("points", ("origin", "eval_top1", "eval_loss")),
    ),
    3: (("points", ("variants",)),),
    4: (("manifest", ("metric",)), ("points", ("metrics", "selection_metrics"))),
    5: (("width_space", ("steps",)),),
    6: (("dataset", ("input_dtype",)),),
    7: (("points", ("eval_metrics",)),),
}


def added_field(manifest: dict[str, Any], version: int) -> str | None:
    """The first field of a schema-valid manifest that format ``version`` added (as ``weights.bn_stats``
    or ``points[].variants``), else None."""
    for part, keys in _FORMAT_FIELDS[version]:
        objects = manifest[part] if part == "points" else [manifest if part == "manifest" else manifest[part]]
        for key in keys:
            if any(key in obj for obj in objects):
                return (
                    f"{part}[].{key}" if part == "points" else key if part == "manifest" else f"{part}.{key}"
                )
    return None


def manifest_format(manifest: dict[str, Any]) -> int:
    """The oldest format that holds a schema-valid manifest's fields: 7 where points have evaluations
    by a declared metric, 6 where its input is integer ids,
    5 where its width space has channel steps, 4 where it declares its metric, 3 where points have quantized variants, 2 where it has BN
    statistics files, off-front points or evaluations, else 1."""
    for version in sorted(_FORMAT_FIELDS, reverse=True):
        if added_field(manifest, version) is not None:
            return version
    return 1


def check_not_newer(manifest: dict[str, Any], source: str | os.PathLike[str]) -> None:
    """Raise :class:`~pareco_runtime.untrusted.FormatError` when a manifest's ``format_version`` is an
    integer newer than :data:`FORMAT_VERSION`: checked before the schema, so a newer file asks for an
    upgrade, not a fix."""
    version = manifest.get("format_version")
    if isinstance(version, (int, float)) and json_type(version) == "integer" and version > FORMAT_VERSION:
        raise _error(
            source, f"written by a newer pareco (format {int(version)} > {FORMAT_VERSION})", "upgrade pareco"
        )
