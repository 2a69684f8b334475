"""The manifest file ``NAME.front.json`` on disk, as a dict: read it (bounded JSON, version, schema, rules,
the files it names and their SHA-256) and write it (validated, atomically).

Typed access is :class:`~pareco_runtime.manifest.front.Front`, built on these two functions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..untrusted import format_error as _error
from ..untrusted import read_json, regular_file, sha256_file
from .json_schema import json_type
from .paths import inside_folder, weights_path
from .rules import REEXPORT, check_manifest_consistency, validate_schema
from .versions import check_not_newer


def save_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Validate ``manifest`` and write it as indented JSON, atomically.

    The manifest is first turned into plain JSON (tuples become lists; NaN or infinity is refused,
    use null), then checked against the schema, :func:`~.rules.check_manifest_consistency` and the weight
    path rule of :func:`~.paths.weights_path`; any failure raises :class:`~pareco_runtime.untrusted.FormatError` and writes nothing.
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
    validate_schema(document, target, "fix the manifest before saving it")
    check_manifest_consistency(document, target)
    weights_path(target, document)
    atomic_write_text(target, text)


def load_manifest(path: str | os.PathLike[str], verify_weights: bool = True) -> dict[str, Any]:
    """Read, check and return a front manifest (a dict); every failure is a :class:`~pareco_runtime.untrusted.FormatError`.

    Checks in order: the path is a regular file of at most
    :data:`~pareco_runtime.untrusted.MAX_JSON_BYTES` (not missing, a folder, a FIFO, a device or a
    link loop); it is JSON nested at most :data:`~pareco_runtime.untrusted.MAX_JSON_DEPTH` levels
    (with the line and column of a syntax error; duplicate keys and NaN/Infinity refused); the top
    level is an object; ``format_version`` is not
    newer than :data:`~.versions.FORMAT_VERSION` (so a newer file asks for an upgrade, not a schema fix); the
    schema (the message names the field path); :func:`~.rules.check_manifest_consistency`; the weight file
    lies inside the manifest's folder (see :func:`~.paths.weights_path`); with ``verify_weights``, the
    weight file is a regular file and its SHA-256 equals ``weights.sha256``, and so is and does each
    BN statistics file of ``weights.bn_stats``.
    """
    source = Path(path)
    manifest = read_json(source, "manifest file", "pass the .front.json file pareco wrote, or re-export it")
    if not isinstance(manifest, dict):
        kind = json_type(manifest)
        raise _error(
            source,
            f"not a front manifest (the top level is a JSON {kind}, expected an object)",
            "pass the .front.json file pareco wrote",
        )
    check_not_newer(manifest, source)
    validate_schema(manifest, source, REEXPORT)
    check_manifest_consistency(manifest, source)
    weights = weights_path(source, manifest)
    if verify_weights:
        _verify_files(source, manifest, weights)
    return manifest


def _verify_files(source: Path, manifest: dict[str, Any], weights: Path) -> None:
    """The weight file and each BN statistics file the manifest ``source`` names are there, unchanged."""
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


def _verify_file(source: Path, path: Path, sha256: str, what: str, todo: str) -> None:
    """``path`` (a file the manifest ``source`` names) exists, is a regular file and has ``sha256``."""
    if not os.path.lexists(path):
        raise _error(source, f"{what} {path} not found", "put it beside the manifest")
    regular_file(path, what, f"put the {what} pareco wrote beside the manifest")
    if sha256_file(path) != sha256:
        raise _error(path, f"{what} changed or corrupt (sha256 mismatch)", todo)
