"""What an exported file carries besides the network, so that an app needs no manifest to feed it and read it.

Every file pareco exports for a front point holds four text entries (:meth:`Carried.file_metadata`):
``pareco.preprocess`` (the whole evaluation transform as JSON:
:meth:`pareco_runtime.preprocess.Preprocess.describe`), ``pareco.labels`` (the class names in output
order, a JSON list), ``pareco.point`` (the point id) and ``pareco.weights_sha256`` (the weight file
it was sliced from). Each format stores them where its own runtime reads them: ONNX as
``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``), TorchScript and
``.pt2`` as extra files of the archive (``_extra_files`` / ``extra_files`` on load), ExecuTorch as
constant methods returning the text, named with ``_`` for ``.`` (``pareco_preprocess``, ...: a
method name cannot hold a dot). The export folder also gets ``labels.txt`` (one class name per
line, in output order), and each ``export.json`` record the transform and the labels file's name.

:func:`carried_identity` reads a file's point id and weight file back without loading its program
(ONNX's protobuf, the TorchScript / ``.pt2`` zip archive), so that a file can be checked to be its
point's before any runtime runs it; ExecuTorch's entries are methods only its runtime can run.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pareco_runtime.atomic import atomic_write_text
from pareco_runtime.preprocess import describe_inputs

from .formats import ExportError

if TYPE_CHECKING:
    from pareco_runtime import FrontPoint, SlimmableRuntime

LABELS_NAME = "labels.txt"


@dataclass(frozen=True)
class Carried:
    """The facts an exported file of ``point`` carries: its transform, labels and provenance."""

    point: str
    weights_sha256: str
    preprocess: dict[str, Any]
    labels: tuple[str, ...]
    channels: tuple[int, ...]

    @classmethod
    def of(cls, rt: SlimmableRuntime, point: FrontPoint) -> Carried:
        """What files of ``point`` of ``rt``'s front carry (the manifest's transform and class names)."""
        dataset = rt.front.dataset
        return cls(
            point=point.id,
            weights_sha256=rt.front.weights_sha256,
            preprocess=describe_inputs(dataset.to_dict()),
            labels=tuple(dataset.class_names),
            channels=tuple(point.channels),
        )

    def file_metadata(self) -> dict[str, str]:
        """The text entries stored inside the file (see the module's docstring for where, per format)."""
        return {
            "pareco.preprocess": json.dumps(self.preprocess, sort_keys=True),
            "pareco.labels": json.dumps(list(self.labels)),
            "pareco.point": self.point,
            "pareco.weights_sha256": self.weights_sha256,
        }

    def index_fields(self) -> dict[str, Any]:
        """What the file's ``export.json`` record adds: the transform, the labels file (None when the
        manifest names no classes) and the point's channels (so that a file of another front's point
        of the same id and weight file is told apart)."""
        return {
            "preprocess": self.preprocess,
            "labels": LABELS_NAME if self.labels else None,
            "channels": list(self.channels),
        }


def write_labels(directory: str | os.PathLike[str], names: Sequence[str]) -> Path | None:
    """Write ``directory/labels.txt``, one class name per line in output order (atomically); returns
    its path, or None when ``names`` is empty (nothing is written).

    An existing file with the same names is kept; one with other names is an :class:`ExportError`
    (the folder's earlier files were exported for other classes), as is a name holding a line break.
    """
    if not names:
        return None
    for name in names:
        if "\n" in name or "\r" in name:
            raise ExportError(
                f"class name {name!r} holds a line break, which {LABELS_NAME} (one name per line) cannot "
                "keep; rename that class folder and train again"
            )
    path = Path(directory) / LABELS_NAME
    text = "".join(f"{name}\n" for name in names)
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return path
        raise ExportError(
            f"{path}: holds {len(old.splitlines())} other class names (files exported from another "
            "front are in that folder); export into another --out, or remove the folder first"
        )
    atomic_write_text(path, text)
    return path


_IDENTITY = ("pareco.point", "pareco.weights_sha256")


def carried_identity(path: Path, fmt: str) -> dict[str, str] | None:
    """The ``pareco.point`` and ``pareco.weights_sha256`` entries ``path`` (a ``fmt`` file) carries, those
    it has; None when the format's entries cannot be read without running the program (ExecuTorch) or
    the file cannot be parsed as the format (its runtime then reports it when it loads the file)."""
    if fmt == "onnx":
        import onnx

        try:
            props = onnx.load(str(path), load_external_data=False).metadata_props
        except Exception:
            return None
        return {p.key: p.value for p in props if p.key in _IDENTITY}
    if fmt in ("torchscript", "pt2"):
        try:
            with zipfile.ZipFile(path) as archive:
                return {
                    key: archive.read(name).decode("utf-8", "replace")
                    for name in archive.namelist()
                    for key in _IDENTITY
                    if name.endswith(f"/extra/{key}") and name.count("/") == 2
                }
        except (zipfile.BadZipFile, OSError):
            return None
    return None
