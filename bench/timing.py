"""Interleaved timing: the way every figure of this project is measured.

These machines drift 10-80 % between processes and over minutes, so candidates are timed in the
same process, round-robin (one call of each per round), and reported as medians and ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


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


def interleaved(candidates: Mapping[str, Callable[[], object]], warmup: int = 30, runs: int = 200,
                inner: int = 1) -> dict[str, Timing]:
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
