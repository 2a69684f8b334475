"""What every export format shares: the :class:`Format` record each format module declares, the
errors, and the :class:`Runner` a loaded file runs batches through.

Nothing here imports torch, NumPy or a format's runtime at load time: the CLI reads the registry to
write its help, and a format's packages may not be installed at all.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import BatchRange

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


class ExportError(ValueError):
    """An export or a parity check failed; the message is one line naming the file and what to do."""


class MissingDependencyError(ExportError):
    """A package a format needs is not installed; the message says what to install."""


@dataclass
class Calibration:
    """What an int8 flow (:class:`Int8Flow`) calibrates on: the images activation ranges are observed on, ``batches`` (normalised inputs) and ``text``
    (which images, for people and records)."""

    batches: list[torch.Tensor]
    text: str

    def __post_init__(self) -> None:
        if not self.batches or not sum(len(b) for b in self.batches):
            raise ExportError(f"no calibration images ({self.text}); give --calib data with training images")

    @property
    def images(self) -> int:
        """How many images calibrate."""
        return sum(len(b) for b in self.batches)


# (model, example inputs (one batch per positional input), path, ONNX opset, batch range, metadata)
# -> format-specific details.
Writer = Callable[
    ["nn.Module", "tuple[torch.Tensor, ...]", Path, "int | None", BatchRange, Mapping[str, str]],
    dict[str, Any],
]
# (the writer's arguments, then the calibration images) -> details.
Int8Writer = Callable[
    ["nn.Module", "tuple[torch.Tensor, ...]", Path, "int | None", BatchRange, Mapping[str, str], Calibration],
    dict[str, Any],
]


@dataclass(frozen=True)
class Serving:
    """The compiled runtime that runs a format's files for ``pareco bench --backend`` and
    ``SlimmableRuntime.load(..., backend=...)``.

    ``package``: the distribution whose version device profiles record; ``runtime``: the profile's
    runtime text (``{version}`` is that version's place); ``extras``: the pareco extras serving
    needs (it exports on first use), which the ``pareco.backends`` entry point of ``pyproject.toml``
    names too; ``concurrent``: whether one loaded file may run from several threads at once;
    ``pool_threads``: sizes a process-wide thread pool, which must happen before any file loads,
    and returns the note for reports (None: threads are set per file); ``cache_batch``: the
    ``--batch`` of files exported on first use (None: :data:`export.serving.CACHE_BATCH`).
    """

    backend: str
    package: str
    runtime: str
    extras: tuple[str, ...]
    concurrent: bool
    pool_threads: Callable[[int], str] | None = None
    cache_batch: str | None = None


@dataclass(frozen=True)
class Int8Flow:
    """How a format's int8 program is made: ``quantizer`` as ``export.json`` records it, and ``write``,
    a :data:`Writer` that also takes the calibration images."""

    quantizer: str
    write: Int8Writer


@dataclass(frozen=True)
class Format:
    """One export format, as a module of :mod:`export.formats` declares it.

    ``title``: how messages name it; ``ext``: the file extension; ``dynamic_batch``: whether a file takes any batch (else it runs the
    batch range it was exported for); ``packages``: the distributions whose versions are recorded
    with each file; ``extra``: the pareco extra installing them (None: torch alone);
    ``export_modules`` / ``run_modules``: what writing / loading a file imports (when one is missing,
    :attr:`export_hint` / :attr:`run_hint` say what to install); ``write``: writes one file;
    ``load``: loads one in its runtime with ``threads`` (None: the runtime's default); ``serving``:
    the backend running its files (None: not one of ``pareco bench``'s); ``int8``: its int8 flow
    (None: fp32 only); ``quiet``: a context hiding notices its runtime prints that a pareco user
    cannot act on; ``flag_help``: the help of its ``pareco export --<name>`` flag; ``side_exts``:
    the extensions of files the writer puts beside the main one (OpenVINO's ``.bin`` weights),
    moved into place with it.
    """

    name: str
    title: str
    ext: str
    dynamic_batch: bool
    write: Writer
    load: Callable[[Path, int | None], Runner]
    flag_help: str
    # A format torch alone writes and runs leaves these out.
    packages: tuple[str, ...] = ("torch",)
    extra: str | None = None
    export_modules: tuple[str, ...] = ()
    run_modules: tuple[str, ...] = ()
    serving: Serving | None = None
    int8: Int8Flow | None = None
    quiet: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    side_exts: tuple[str, ...] = ()

    @property
    def export_hint(self) -> str:
        """What to install to write this format's files: its packages beyond torch, and their extra."""
        return self._install_hint(f"{self.title} export", self.packages[1:])

    @property
    def run_hint(self) -> str:
        """What to install to run this format's files: the package of the runtime serving them (else every
        package beyond torch), and the extra holding it."""
        runtime = (self.serving.package,) if self.serving is not None else self.packages[1:]
        return self._install_hint(f"running {self.title} files", runtime)

    def _install_hint(self, what: str, packages: tuple[str, ...]) -> str:
        if self.extra is None:
            return ""
        names = ", ".join(packages[:-1]) + " and " + packages[-1] if len(packages) > 1 else packages[0]
        return f"{what} needs {names}, the {self.extra} extra: pip install 'pareco[{self.extra}]'"

    def require(self, for_export: bool = True) -> None:
        """:class:`MissingDependencyError` unless what writing (or, ``for_export=False``, running) a
        file imports can be imported."""
        modules, hint = (
            (self.export_modules, self.export_hint) if for_export else (self.run_modules, self.run_hint)
        )
        with self.quiet():
            for name in modules:
                try:
                    importlib.import_module(name)
                except ImportError as exc:
                    raise MissingDependencyError(f"{hint} ({name} cannot be imported: {exc})") from None


class Runner:
    """A loaded export: ``runner(x)`` runs a batch (NumPy array or tensor) and returns the output as NumPy;
    ``runner.outputs(x)`` returns every output, in :mod:`pareco_runtime.outputs`' order. A network of
    several inputs takes one batch of each, in its ``forward``'s order: ``runner(x, mask)``.

    ``bind(x)`` converts ``x`` once to the runtime's own input type and returns a zero-argument
    callable running just the inference, for timing loops. ``batches``: the batch sizes the file
    accepts (None: any); a batch outside it is an :class:`ExportError` naming the ``--batch`` to
    export with, before the runtime sees it. ``prepare`` converts the list of inputs to the runtime's
    own (:func:`each`), ``run`` runs that list.
    """

    def __init__(
        self,
        fmt: str,
        path: Path,
        run: Callable[[list[Any]], Any],
        prepare: Callable[[Sequence[Any]], list[Any]],
        batches: BatchRange | None = None,
        keep: Any = None,
    ) -> None:
        self.fmt = fmt
        self.path = path
        self.batches = batches
        self._keep = keep  # native objects the runtime needs alive while ``run`` is used
        self._run = run
        self._prepare = prepare

    def _check(self, xs: tuple[Any, ...]) -> None:
        n = int(xs[0].shape[0])
        if self.batches is None or self.batches.accepts(n):
            return
        if self.batches.is_static:
            raise ExportError(
                f"{self.path.name} was exported for batch {self.batches.low} but got batch {n}; "
                f"export it again with --batch {n}, or --batch dynamic:MAX for any batch up to MAX"
            )
        raise ExportError(
            f"{self.path.name} runs {self.batches.describe()} (exported with --batch "
            f"{self.batches.record()}) but got batch {n}; export it again with --batch dynamic:{max(n, 2)} "
            "or a larger bound"
        )

    def __call__(self, *xs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Run one batch; the output as a float NumPy array (:class:`ExportError` for a file with several)."""
        outputs = self.outputs(*xs)
        if len(outputs) != 1:
            raise ExportError(
                f"{self.path.name} returns {len(outputs)} outputs; read them all with Runner.outputs(x)"
            )
        return outputs[0]

    def outputs(self, *xs: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Run one batch; every output as a NumPy array, in the file's (flattened) order."""
        import numpy as np
        import torch

        self._check(xs)
        out = self._run(self._prepare(xs))
        return [
            o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else np.asarray(o)
            for o in (out if isinstance(out, (list, tuple)) else [out])
        ]

    def bind(self, *xs: np.ndarray | torch.Tensor) -> Callable[[], Any]:
        """A callable running the inference on ``xs`` (converted once), returning the runtime's raw output."""
        self._check(xs)
        prepared = self._prepare(xs)
        run = self._run
        return lambda: run(prepared)


def each(convert: Callable[[Any], Any]) -> Callable[[Sequence[Any]], list[Any]]:
    """A runner's ``prepare`` applying ``convert`` (:func:`as_tensor`, :func:`as_array`) to every input."""
    return lambda xs: [convert(x) for x in xs]


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous tensor of a runner's input dtype (float32; integer token ids keep theirs)."""
    import numpy as np
    import torch

    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return (t.float() if t.is_floating_point() else t).contiguous()


def as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``x`` as a contiguous NumPy array of a runner's input dtype (float32; integer token ids keep theirs)."""
    import numpy as np
    import torch

    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(arr, dtype=np.float32 if arr.dtype.kind == "f" else arr.dtype)


def torch_runner(fmt: str, path: Path, module: Callable[..., torch.Tensor]) -> Runner:
    """A :class:`Runner` calling a torch module under ``torch.inference_mode``."""
    import torch

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return module(*xs)

    return Runner(fmt, path, run, each(as_tensor))


def batch_dim(model: nn.Module, batch: BatchRange, inputs: int = 1) -> Any:
    """``dynamic_shapes`` for ``model``'s ``inputs`` positional inputs: None for a static batch, else one
    symbolic batch dimension, shared by every input, with the range's upper bound (if any); nested one
    level for a ``forward(*inputs)`` (:class:`~pareco_runtime.outputs.FlatOutputs`), as torch.export
    matches them to the signature."""
    import inspect

    import torch

    if batch.is_static:
        return None
    bound = {} if batch.high is None else {"min": batch.low, "max": batch.high}
    dim = torch.export.Dim("batch", **bound)
    shapes = tuple({0: dim} for _ in range(inputs))
    varargs = any(
        p.kind is inspect.Parameter.VAR_POSITIONAL
        for p in inspect.signature(model.forward).parameters.values()
    )
    return (shapes,) if varargs else shapes


def save_via_memory(save: Callable[[io.BytesIO], None], path: Path) -> None:
    """Serialise into memory, then write the bytes: torch's C++ file writer aborts the whole process
    when the disk fills mid-write (measured on a full tmpfs: exit 134 for TorchScript and .pt2),
    while a failed Python write is an ``OSError`` the caller reports in one line."""
    buffer = io.BytesIO()
    save(buffer)
    path.write_bytes(buffer.getbuffer())


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 to a temporary file for the block; yield a function reading what it got.

    ExecuTorch's C++ runtime logs from native code (CPU probing, thread-pool resets) straight to
    descriptor 2, which Python's ``sys.stderr`` redirection cannot catch.
    """
    with tempfile.TemporaryFile(mode="w+b") as sink:

        def read() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def last_line(text: str) -> str:
    """`` (runtime said: <last non-empty line>)``, or nothing when ``text`` is blank."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f" (runtime said: {lines[-1]})" if lines else ""
