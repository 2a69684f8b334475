"""export: slice front points into standalone files (ONNX, TorchScript, ``.pt2``, ExecuTorch) and check them.

```python
from export import export_point, load_runner
res = export_point(rt.standalone("p02"), rt.input_size, "onnx", "out/p02.onnx")
y = load_runner("onnx", res.path, threads=1)(x)          # NumPy output
```
Each file is loaded back in its own runtime and compared with PyTorch before it is moved into
place; ``export_points`` exports several points, writes ``labels.txt`` and keeps ``export.json``
up to date, and every file it writes carries the point's preprocessing, labels and provenance
(:mod:`export.metadata`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The modules behind the names below, imported on first use: the format registry
# (:mod:`export.formats`) must stay importable without torch, for the CLI's help.
_HOME = {
    "DEFAULT_ATOL": "exporter",
    "ExportResult": "exporter",
    "export_point": "exporter",
    "export_points": "exporter",
    "parity_inputs": "exporter",
    "FORMATS": "formats",
    "ExportError": "formats",
    "Format": "formats",
    "MissingDependencyError": "formats",
    "Runner": "formats",
    "constant_method": "formats",
    "get_format": "formats",
    "load_runner": "formats",
    "require": "formats",
    "versions": "formats",
    "INDEX_NAME": "index",
    "find_export": "index",
    "merge_index": "index",
    "read_index": "index",
    "LABELS_NAME": "metadata",
    "Carried": "metadata",
    "write_labels": "metadata",
}

if TYPE_CHECKING:
    from .exporter import DEFAULT_ATOL, ExportResult, export_point, export_points, parity_inputs
    from .formats import (
        FORMATS,
        ExportError,
        Format,
        MissingDependencyError,
        Runner,
        constant_method,
        get_format,
        load_runner,
        require,
        versions,
    )
    from .index import INDEX_NAME, find_export, merge_index, read_index
    from .metadata import LABELS_NAME, Carried, write_labels


def __getattr__(name: str) -> Any:
    """``export.NAME``: the name from its module, imported now."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "DEFAULT_ATOL",
    "FORMATS",
    "INDEX_NAME",
    "LABELS_NAME",
    "Carried",
    "ExportError",
    "ExportResult",
    "Format",
    "MissingDependencyError",
    "Runner",
    "constant_method",
    "export_point",
    "export_points",
    "find_export",
    "get_format",
    "load_runner",
    "merge_index",
    "parity_inputs",
    "read_index",
    "require",
    "versions",
    "write_labels",
]
