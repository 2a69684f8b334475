"""Energy per inference from the host's cumulative counters: RAPL (CPU package) or NVML (GPU).

Energy is read from RAPL (``/sys/class/powercap/intel-rapl:0/energy_uj``, CPU backends) or NVML
(``cuda``) when readable; elsewhere none is recorded and none is claimed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import torch

_RAPL = Path("/sys/class/powercap/intel-rapl:0")
# Energy is read over at least this long per candidate: RAPL and NVML counters update about every millisecond.
_ENERGY_SECONDS = 0.5


class EnergyMeter:
    """A cumulative energy counter (RAPL package or NVML GPU), in millijoules.

    ``read()`` returns the counter; RAPL counters wrap at ``max_energy_range_uj``, which
    :meth:`per_call_mj` corrects for. RAPL counts the whole CPU package, idle power and other
    processes included, so its figures are upper bounds on one inference's energy.
    """

    def __init__(self, source: str, read: Callable[[], float], wrap_mj: float | None = None) -> None:
        self.source = source
        self.read = read
        self.wrap_mj = wrap_mj

    @classmethod
    def for_backend(cls, backend: str, rapl: Path = _RAPL) -> EnergyMeter | None:
        """The meter for ``backend`` on this host: NVML for cuda, RAPL otherwise; None if unreadable."""
        if backend == "cuda":
            return cls._nvml()
        energy = rapl / "energy_uj"
        try:
            float(energy.read_text())
        except (OSError, ValueError):
            return None
        wrap = None
        with contextlib.suppress(OSError, ValueError):
            wrap = float((rapl / "max_energy_range_uj").read_text()) / 1000.0
        return cls("rapl", lambda: float(energy.read_text()) / 1000.0, wrap)

    @classmethod
    def _nvml(cls) -> EnergyMeter | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:
            return None
        return cls("nvml", lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)))

    def per_call_mj(self, fn: Callable[[], object], seconds_per_call: float) -> float:
        """Energy of one call of ``fn``: the counter's increase over enough calls to last ``_ENERGY_SECONDS``."""
        n = max(10, math.ceil(_ENERGY_SECONDS / max(seconds_per_call, 1e-6)))
        start = self.read()
        for _ in range(n):
            fn()
        used = self.read() - start
        if used < 0 and self.wrap_mj:
            used += self.wrap_mj
        return max(used, 0.0) / n


def energy_note(meters: dict[str, EnergyMeter | None]) -> str:
    """One line saying where energy comes from, or that none is measured here."""
    found = sorted({m.source for m in meters.values() if m is not None})
    if found:
        return (
            f"energy from {' and '.join(found).upper()} (whole package or GPU, idle power included: an upper "
            "bound per inference)"
        )
    return (
        "energy: not measured and not recorded (no readable RAPL counter or NVML on this host); no energy "
        "figure is claimed"
    )
