"""Each distinct export is lowered once per test session; later identical exports replay its files.

Most slow tests export the session's tiny front to ExecuTorch, ONNX or LiteRT to serve it, bench it or
check a record, not to test lowering, and many export the same points with the same settings. In one
run of the whole suite (2026-12-07, fresh clone, two xdist workers), 132 exports ran the writers
in-process: 95 distinct ones took 457 s of lowering and the 37 repeats, replayed, would have taken 191 s
more. A writer's files are a function of what :func:`export.exporter._write` is given: the model (its
layers, weights, generated graph code, plain attributes and the sources of its non-torch classes and
their bases), the example inputs, the format's writer, the ONNX opset, the batch range, the metadata
stored in the file, the int8 calibration images and the file's name. The memo keys on all of them and, on a repeat, copies the first call's files
into the new staging folder and returns its details; everything around the writer (the parity check in
the format's runtime, ``export.json`` records, locks, atomic moves) runs in every test as before.

Not memoised: a writer other than the registry's own (a test that replaces it to crash or misbehave) and
a model the key cannot describe (a class whose source cannot be read). The store is shared by the xdist
workers of one session (written to a temporary name and renamed into place).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import export.exporter
from export.batch import BatchRange
from export.formats import FORMATS, Calibration, get_format

_PLAIN_ATTRIBUTE = (bool, int, float, str, tuple, list, type(None))


def _tensor_digest(h: Any, t: torch.Tensor) -> None:
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _model_digest(h: Any, model: nn.Module) -> bool:
    """Feed everything ``model``'s forward depends on into ``h``; False when it cannot be described."""
    h.update(repr(model).encode())
    for name, m in model.named_modules():
        cls = type(m)
        h.update(f"{name}:{cls.__module__}.{cls.__qualname__}".encode())
        if isinstance(m, torch.fx.GraphModule):
            h.update(m.code.encode())
        else:
            for own in (c for c in cls.__mro__ if not c.__module__.startswith(("torch.", "builtins"))):
                try:
                    h.update(inspect.getsource(own).encode())
                except (OSError, TypeError):
                    return False
        plain = {
            k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, _PLAIN_ATTRIBUTE)
        }
        h.update(repr(sorted(plain.items())).encode())
    for key, t in model.state_dict().items():
        h.update(key.encode())
        _tensor_digest(h, t)
    return True


class ExportMemo:
    """Replays the files of an identical earlier ``_write`` call from ``store`` (see the module docstring)."""

    def __init__(self, store: Path, write: Callable[..., dict[str, Any]]) -> None:
        self.store = store
        self.write = write
        # The registry's own writers, captured before any test can replace one.
        self.writers = dict(FORMATS)

    def _key(
        self,
        model: nn.Module,
        example: tuple[torch.Tensor, ...],
        staged: Path,
        fmt: str,
        opset: int | None,
        batches: BatchRange,
        metadata: dict[str, str],
        int8: Calibration | None,
    ) -> str | None:
        if get_format(fmt) is not self.writers.get(fmt):
            return None
        h = hashlib.sha256()
        h.update(
            json.dumps([fmt, staged.name, opset, str(batches.record()), sorted(metadata.items())]).encode()
        )
        for x in example:
            _tensor_digest(h, x)
        if int8 is not None:
            h.update(int8.text.encode())
            for b in int8.batches:
                _tensor_digest(h, b)
        return h.hexdigest() if _model_digest(h, model) else None

    def __call__(self, *args: Any) -> dict[str, Any]:
        """``_write(model, example, staged, fmt, opset, batches, metadata, int8)``, replayed when seen before."""
        key = self._key(*args)
        staged = args[2]
        entry = self.store / key if key is not None else None
        if entry is not None and entry.is_dir():
            for f in entry.iterdir():
                if f.name != "details.pickle":
                    shutil.copyfile(f, staged.parent / f.name)
            return pickle.loads((entry / "details.pickle").read_bytes())
        details = self.write(*args)
        if entry is not None:
            tmp = self.store / f"{key}.tmp-{os.getpid()}"
            shutil.copytree(staged.parent, tmp)
            (tmp / "details.pickle").write_bytes(pickle.dumps(copy.deepcopy(details)))
            try:
                tmp.rename(entry)
            except OSError:  # another worker stored it first
                shutil.rmtree(tmp, ignore_errors=True)
        return details


def installed(store: Path) -> Iterator[ExportMemo]:
    """Install the memo over ``export.exporter._write`` until the generator is closed."""
    store.mkdir(parents=True, exist_ok=True)
    original = export.exporter._write
    memo = ExportMemo(store, original)
    export.exporter._write = memo
    try:
        yield memo
    finally:
        export.exporter._write = original
