"""Latency look-up tables as the runtime reads them: predict any config's latency on one device profile.

A table (``NAME.lut.<profile>.json`` beside the manifest ``NAME.front.json``) holds, per block of the
network, its time on a small grid of channel counts, and predicts a config's latency as a calibrated
sum of multilinear interpolations (how it is built and checked: :mod:`bench.lut`, ``pareco bench
lut``). This module owns the file: reading, writing and predicting, with torch-free
arithmetic, so that training (latency as the search's cost), the runtime and apps use one reader.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .manifest import DeviceProfile, FrontPoint
from .space import WidthSpace
from .untrusted import FormatError, read_json

LUT_FORMAT = 1
# What a refused table's message tells to do, where the caller has no better advice.
REBUILD = "rebuild it with `pareco bench lut MANIFEST`"


class LatencyTableError(ValueError):
    """A latency table that cannot be read or does not fit the model; the message says what to do."""


@dataclass
class UnitTable:
    """One unit's timings: ``times_ms`` over the grid ``levels`` (channel counts per dim of ``dims``),
    row-major (the last dimension varies fastest)."""

    name: str
    dims: list[int]
    levels: list[list[int]]
    times_ms: list[float]

    def raw_ms(self, channels: Sequence[int]) -> float:
        """Multilinear interpolation (linear extrapolation outside the grid) at the config's channels."""
        axes: list[tuple[tuple[int, float], ...]] = []
        for d, lv in zip(self.dims, self.levels):
            if len(lv) == 1:
                axes.append(((0, 1.0),))
                continue
            c = channels[d]
            j = min(max(bisect.bisect_right(lv, c) - 1, 0), len(lv) - 2)
            t = (c - lv[j]) / (lv[j + 1] - lv[j])
            axes.append(((j, 1.0 - t), (j + 1, t)))
        strides = [math.prod(len(lv) for lv in self.levels[k + 1 :]) for k in range(len(self.levels))]
        total = 0.0
        for corner in itertools.product(*axes):
            weight = math.prod(w for _, w in corner)
            total += weight * self.times_ms[sum(i * s for (i, _), s in zip(corner, strides))]
        return total


@dataclass
class LatencyLUT:
    """A latency predictor for one architecture on one device profile.

    ``predict_ms(channels)`` = ``offset_ms + scale * raw_ms(channels)`` where ``raw_ms`` sums the
    unit tables. ``channels``: one count per width dimension (a front point's ``channels``).
    ``report`` holds the calibration and validation figures; ``host`` the machine it was timed on
    (as device profiles describe it; empty in tables of older versions).
    """

    profile: str
    backend: str
    threads: int
    batch: int
    arch: str
    arch_kwargs: dict[str, Any]
    input_size: list[int]
    width_space: dict[str, Any]
    units: list[UnitTable]
    offset_ms: float = 0.0
    scale: float = 1.0
    report: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    host: str = ""

    def raw_ms(self, channels: Sequence[int]) -> float:
        """The uncalibrated sum of the unit tables."""
        return sum(u.raw_ms(channels) for u in self.units)

    def predict_ms(self, channels: Sequence[int]) -> float:
        """Predicted latency of the config with these channel counts, in milliseconds."""
        if len(channels) != len(self.width_space["names"]):
            raise LatencyTableError(
                f"the look-up table is for {len(self.width_space['names'])} width dimensions, got "
                f"{len(channels)} channel counts; build a table for this architecture"
            )
        return self.offset_ms + self.scale * self.raw_ms(channels)

    def predict_alpha(self, alpha: Sequence[float]) -> float:
        """Predicted latency of the config with these width multipliers."""
        return self.predict_ms(WidthSpace.from_dict(self.width_space).channels(alpha))

    def mismatch(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        input_size: Sequence[int],
        width_space: Mapping[str, Any],
    ) -> str | None:
        """What differs between the network this table was built for and the one described (None if
        it is the same one: its predictions hold only for the network it timed)."""
        ours = {
            "architecture": self.arch,
            "its arguments": json.dumps(self.arch_kwargs, sort_keys=True),
            "input size": list(self.input_size),
            "width space": json.dumps(self.width_space, sort_keys=True),
        }
        theirs = {
            "architecture": arch,
            "its arguments": json.dumps(dict(arch_kwargs), sort_keys=True),
            "input size": [int(v) for v in input_size],
            "width space": json.dumps(dict(width_space), sort_keys=True),
        }
        for what, value in ours.items():
            if value != theirs[what]:
                return f"{what} {value} in the table, {theirs[what]} in the model"
        return None

    def device_profile(self) -> DeviceProfile:
        """The device profile this table predicts for, as a manifest records it: its backend, threads,
        batch, host and date."""
        return DeviceProfile(
            name=self.profile,
            runtime=self.backend,
            threads=self.threads,
            batch=self.batch,
            host=self.host or "unknown (the latency table names no host)",
            date=self.created,
        )

    def predict_points(self, points: Sequence[FrontPoint]) -> dict[str, float]:
        """Predicted latency of each front point, by point id."""
        return {p.id: self.predict_ms(p.channels) for p in points}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the file's content)."""
        return {"lut_format": LUT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyLUT:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("lut_format") != LUT_FORMAT:
            found = d.get("lut_format") if isinstance(d, dict) else f"a JSON {type(d).__name__}"
            raise LatencyTableError(
                f"latency table format {found!r} is not {LUT_FORMAT}; rebuild it with "
                "`pareco bench lut MANIFEST`"
            )
        fields = {k: v for k, v in d.items() if k != "lut_format"}
        fields["units"] = [UnitTable(**u) for u in fields["units"]]
        _check_figures(fields)
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path, todo: str = REBUILD) -> LatencyLUT:
        """Read a table written by :meth:`save` (LatencyTableError if it is not one: also a FIFO, a device, a file
        over 64 MiB or JSON nested too deep, as :func:`~pareco_runtime.untrusted.read_json` refuses them),
        its message ending in ``todo``."""
        try:
            return cls.from_dict(read_json(path, "latency table", todo))
        except FormatError as exc:
            raise LatencyTableError(f"{path}: not a readable latency table ({exc.what}); {todo}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise LatencyTableError(
                f"{path}: not a readable latency table ({type(exc).__name__}: {exc}); {todo}"
            ) from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_figures(fields: Mapping[str, Any]) -> None:
    """LatencyTableError naming the first figure a prediction uses that is out of range: the offset
    a finite number, the scale one above 0, every unit's timings finite and not negative."""
    problems = []
    if not _is_number(fields.get("offset_ms", 0.0)):
        problems.append(f"offset_ms {fields['offset_ms']!r} is not a finite number of milliseconds")
    scale = fields.get("scale", 1.0)
    if not (_is_number(scale) and scale > 0):
        problems.append(f"scale {scale!r} is not a finite number above 0")
    for unit in fields["units"]:
        times = unit.times_ms if isinstance(unit.times_ms, list) else [unit.times_ms]
        bad = next((t for t in times if not (_is_number(t) and t >= 0)), None)
        if bad is not None or not times:
            problems.append(f"unit {unit.name!r}: time {bad!r} ms is not a finite number >= 0")
    if problems:
        raise LatencyTableError(f"field {problems[0]}")


def lut_path(manifest_path: str | Path, profile: str) -> Path:
    """``NAME.lut.<profile>.json`` beside the manifest ``NAME.front.json``."""
    path = Path(manifest_path)
    stem = path.name[: -len(".front.json")] if path.name.endswith(".front.json") else path.stem
    return path.with_name(f"{stem}.lut.{profile}.json")


def fitting_lut(
    manifest_path: str | Path, profile: str, backend: str, threads: int, batch: int
) -> LatencyLUT | None:
    """The table saved beside the manifest for ``profile`` if it was built for the same backend, threads and
    batch (only then does it predict that profile's latencies), else None."""
    path = lut_path(manifest_path, profile)
    if not (
        path.exists() or path.is_symlink()
    ):  # a link loop is not "no table": LatencyLUT.load says what it is
        return None
    lut = LatencyLUT.load(path)
    return lut if (lut.backend, lut.threads, lut.batch) == (backend, threads, batch) else None
