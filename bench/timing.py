"""Interleaved timing: the way every figure of this project is measured, and the process setup it needs.

These machines drift 10-80 % between processes and over minutes, so candidates are timed in the
same process, round-robin (one call of each per round), and reported as medians and ratios. Model
benchmarks time each call right after an untimed call of the same model (:func:`interleaved_warm`),
with torch's thread count fixed (:func:`torch_threads`) and glibc's malloc keeping freed memory
(:func:`steady_malloc`), so that figures are steady-state inference.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import torch

from bench.errors import BenchError


@dataclass(frozen=True)
class TimingSettings:
    """How candidates are timed, passed whole to every timing function.

    ``threads``: threads per inference (torch's thread count, ONNX Runtime's intra-op threads, a
    runtime's process-wide pool); ``batch``: the batch size timed (None: the caller's default, see
    :meth:`resolved`); ``warmup`` untimed rounds, then ``runs`` timed rounds, each round one call of
    every candidate (:func:`interleaved_warm`); ``steady_memory``: call :func:`steady_malloc` first
    (process-wide); ``seed``: of the random inputs. A value out of range is a :class:`BenchError`
    naming its flag.
    """

    threads: int = 1
    batch: int | None = None
    warmup: int = 30
    runs: int = 200
    steady_memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for flag, value, least in (
            ("--threads", self.threads, 1),
            ("--batch", self.batch, 1),
            ("--warmup", self.warmup, 0),
            ("--runs", self.runs, 1),
        ):
            if value is not None and value < least:
                raise BenchError(f"{flag} {value}: must be at least {least}")

    def resolved(self, batch: Callable[[], int]) -> TimingSettings:
        """These settings with the batch ``batch()`` gives when none was given."""
        return self if self.batch is not None else replace(self, batch=batch())

    @property
    def batch_size(self) -> int:
        """The batch timed; BenchError if it was left to a default not yet :meth:`resolved`."""
        if self.batch is None:
            raise BenchError("no batch size given; give --batch N")
        return self.batch

    @property
    def below_reported(self) -> str | None:
        """A note when fewer rounds run than the project's reported figures use (30 / 200), else None."""
        if self.warmup < 30 or self.runs < 200:
            return f"{self.warmup} warm-up / {self.runs} timed runs is below the 30 / 200 used for reported figures"
        return None


@dataclass
class Timing:
    """Summary of one candidate's timed calls, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) of the samples, nearest-rank."""
        s = sorted(self.samples)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    @property
    def p90(self) -> float:
        return self.quantile(0.9)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def iqr(self) -> float:
        return self.quantile(0.75) - self.quantile(0.25)


def interleaved(
    candidates: Mapping[str, Callable[[], object]], warmup: int = 30, runs: int = 200, inner: int = 1
) -> dict[str, Timing]:
    """Time each callable ``runs`` times, one call of each per round, after ``warmup`` rounds.

    ``inner`` calls are made per sample (for microsecond-scale work), and the sample is the mean.
    """
    names = list(candidates)
    for _ in range(warmup):
        for n in names:
            candidates[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    for _ in range(runs):
        for n in names:
            fn = candidates[n]
            t0 = clock()
            for _ in range(inner):
                fn()
            samples[n].append((clock() - t0) / inner)
    return {n: Timing(s) for n, s in samples.items()}


def interleaved_warm(
    candidates: Mapping[str, Callable[[], object] | tuple[Callable[[], object], Callable[[], object]]],
    warmup: int,
    runs: int,
) -> dict[str, Timing]:
    """:func:`interleaved` where every timed call comes right after an untimed one of the same candidate.

    Round-robin keeps drift from favouring any candidate, but with many models it also leaves
    each one's weights out of the caches when its turn comes: with 25 MobileNetV2 configs that made
    every call 40-50 % slower than back-to-back inference, by amounts that differed from config to
    config. The untimed call brings the model back into the caches, so the timed one measures
    steady-state inference whatever the number of candidates. A candidate is a callable, or a pair
    (untimed call, timed call) when the two must differ.
    """
    sequence: dict[str, Callable[[], object]] = {}
    for name, c in candidates.items():
        before, timed = c if isinstance(c, tuple) else (c, c)
        sequence[f"{name}\0untimed"] = before
        sequence[name] = timed
    timings = interleaved(sequence, warmup=warmup, runs=runs)
    return {name: timings[name] for name in candidates}


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit hosts
STEADY_MALLOC = "glibc malloc keeping freed memory (mallopt: mmap threshold 32 MiB, no trimming)"


def steady_malloc() -> bool:
    """Make glibc's malloc keep freed memory for the rest of the process; False where it is not glibc.

    By default glibc hands large freed blocks (activations of a few MB) back to the OS, and the
    next forward pass of torch eager page-faults them in again. On the 2-core test host that cost
    25-40 % of MobileNetV2's eager latency, varying from config to config with malloc's history,
    which no latency table can predict. onnxruntime (its arena) and ExecuTorch (planned memory)
    reuse their buffers anyway, so this puts torch eager on the same footing, as jemalloc or
    tcmalloc would. Process-wide and permanent: benchmarks call it, libraries should not.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block, the previous count restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def torch_callable(
    model: torch.nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], cuda: bool = False
) -> Callable[[], object]:
    """A zero-argument callable running ``model(x)`` (``model(*x)`` for a tuple, one batch per input)
    under ``inference_mode`` (synchronised on a GPU)."""
    inputs = x if isinstance(x, tuple) else (x,)
    if not cuda:

        def run() -> object:
            with torch.inference_mode():
                return model(*inputs)

        return run

    model, inputs = model.cuda(), tuple(t.cuda() for t in inputs)

    def run_cuda() -> object:
        with torch.inference_mode():
            y = model(*inputs)
        torch.cuda.synchronize()
        return y

    return run_cuda
