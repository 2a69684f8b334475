"""A latency look-up table made up for a model, for tests of what reads tables (not a test module)."""

from __future__ import annotations

from pareco_runtime.latency_table import LatencyLUT, UnitTable
from pareco_runtime.models.base import SlimmableNet


def synthetic_table(
    model: SlimmableNet, profile: str = "phone", backend: str = "executorch", host: str = ""
) -> LatencyLUT:
    """A table for ``model`` with one two-dimensional unit (dims 0 and 1; dim 0 alone in a space of
    one) and one unit per further dimension, on uneven grids, with times that are not linear in the
    channels (so interpolation matters) and that rise with every channel count."""
    full = model.space.full
    grid = [sorted({max(1, f // 4), f // 2, f}) for f in full]
    a, b = grid[0], grid[1] if len(grid) > 1 else [1]
    pair = [0, 1] if len(grid) > 1 else [0]
    cells = [0.01 * x * y**0.5 + 0.2 for x in a for y in b]
    units = [UnitTable("pair", pair, [a, b][: len(pair)], cells)]
    for d in range(2, model.space.dims):
        units.append(UnitTable(f"u{d}", [d], [grid[d]], [0.05 + 0.002 * c**1.3 for c in grid[d]]))
    return LatencyLUT(
        profile=profile,
        backend=backend,
        threads=1,
        batch=1,
        arch=model.arch,
        arch_kwargs=dict(model.arch_kwargs),
        input_size=list(model.input_size),
        width_space=model.space.to_dict(),
        units=units,
        offset_ms=0.05,
        scale=1.3,
        created="2026-12-02T00:00:00Z",
        host=host,
    )
