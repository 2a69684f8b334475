"""Latency look-up table: predict any config's latency from timings of its blocks.

A network is cut into *units*: the blocks it is built from (ResNet-CIFAR: the stem conv and BN,
each residual block, the classifier; MobileNet: each entry of ``features`` and the classifier),
as OFA's latency tables do per block. Timing whole blocks, rather than single convs, keeps the
per-op costs a sum of convs would miss (BN, activations, residual adds, padding, framework
dispatch) inside the table.

A unit's latency depends on the channel counts of the few width dimensions it reads (at most
three: input, inner, output). Convs cost a sum of products of two channel counts plus terms linear
in one, which is *multilinear* in the channel counts, so the table holds each unit's time on a
small grid of channel counts per dimension (``levels``, from the space's lowest width to full) and
predicts between grid points by multilinear interpolation: exact for that cost shape, with the
inner grid points catching what vectorisation and caches bend.

On eager torch, blocks are timed *in place*: whole sliced models run with a clock read at each
block's start, so each block sees the caches and the dispatch overhead the whole model gives it (a
block timed alone, on an input that stays in cache, runs faster than it does inside the model). A
few dozen grid configs, chosen so that every block meets every combination of its dimensions'
levels, fill the whole table. A compiled runtime (ONNX Runtime, ExecuTorch) runs a program with no
clock between blocks, so there each distinct block of those grid configs (same layers, same input
shape) is exported and timed alone, and the calibration below absorbs what isolation changes.

What no block owns (the top-level forward call, anything before the first block) and what the
grid cannot see is left to a calibration, ``offset + scale * sum``, fitted on a few measured
whole-model configs (relative least squares). The table is validated on ``validate`` other random
configs; the errors of the raw sum and of the calibrated prediction are both reported. Grid,
calibration and validation configs are timed in one interleaved run, each timed call right after
an untimed call of the same model (steady-state inference, as ``pareco bench`` measures it).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.device import device_profile, host_description, write_profile
from bench.errors import BenchError
from bench.timing import (
    STEADY_MALLOC,
    TimingSettings,
    interleaved_warm,
    steady_malloc,
    torch_callable,
    torch_threads,
)
from export.exporter import export_point
from export.formats import SERVED, load_runner, served_format, serving
from pareco_runtime.filelock import locked
from pareco_runtime.latency_table import LatencyLUT, UnitTable, lut_path
from pareco_runtime.manifest import DeviceProfile, Front, utc_timestamp
from pareco_runtime.model_check import build_front_model
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.ops import SLIM_TYPES
from pareco_runtime.slicing import plain_twin, slice_model
from pareco_runtime.space import WidthSpace

# Compiled runtimes cannot be hooked between blocks: each distinct block is exported alone and timed
# as its own program, and the calibration on whole exported models takes up what that misses.
LUT_BACKENDS = ("torch", "cuda", *SERVED)


# ---------------------------------------------------------------------------------------------- building


@dataclass
class _Unit:
    name: str
    dims: list[int]


def discover_units(model: SlimmableNet) -> list[_Unit]:
    """The blocks of ``model`` whose cost depends on its widths, in module order.

    Units are the model's children, and the children of its top-level ``nn.Sequential``s; children
    without a slimmable layer (dropout, activations) do not depend on widths, and the time they
    take is counted in the unit that runs before them.
    """
    units = []
    for name, child in model.named_children():
        subs = list(child.named_children()) if isinstance(child, nn.Sequential) else [("", child)]
        for sub, module in subs:
            slims = [m for m in module.modules() if isinstance(m, SLIM_TYPES)]
            if slims:
                dims = sorted(
                    {s for m in slims for _, s in (*m.in_parts, *m.out_parts) if s < model.space.dims}
                )
                units.append(_Unit(f"{name}.{sub}" if sub else name, dims))
    return units


def grid_levels(space: WidthSpace, levels: int) -> list[dict[int, float]]:
    """Per width dimension, ``{channel count: width multiplier giving it}`` for ``levels`` uniform widths
    from the space's low to 1, raised to each dimension's floor (fewer where rounding merges them)."""
    out: list[dict[int, float]] = [{} for _ in range(space.dims)]
    for w in np.linspace(space.low, space.high, max(2, levels)):
        for d, c in enumerate(space.channels(space.uniform(float(w)))):
            out[d].setdefault(c, float(w))
    return [dict(sorted(lv.items())) for lv in out]


def _covering(units: Sequence[_Unit], sizes: Sequence[int]) -> list[dict[int, int]]:
    """Assignments {dim: level index} such that every unit sees each combination of its dims' levels.

    Greedy: each new assignment lets every unit, in turn, fix its still-unassigned dims to one of its
    missing combinations consistent with what earlier units fixed. Dims left free take the top
    level. Roughly ``levels ** 3`` assignments, instead of one whole-model slice per grid point.
    """
    pending = [set(itertools.product(*[range(sizes[d]) for d in u.dims])) for u in units]
    out = []
    while any(pending):
        fixed: dict[int, int] = {}
        for u, todo in zip(units, pending):
            for combo in sorted(todo):
                if all(fixed.get(d, c) == c for d, c in zip(u.dims, combo)):
                    fixed.update(zip(u.dims, combo))
                    break
        assignment = {d: fixed.get(d, sizes[d] - 1) for d in range(len(sizes))}
        for u, todo in zip(units, pending):
            todo.discard(tuple(assignment[d] for d in u.dims))
        out.append(assignment)
    return out


def _timed_in_context(
    model: nn.Module, names: Sequence[str], x: torch.Tensor, cuda: bool, warmup: int, store: list[list[float]]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two callables running ``model(x)``: the second appends each unit's time, in seconds, to ``store[unit]``.

    A unit's time runs from its start to the next unit's start (the last one's to the end of the
    forward pass), so what runs between blocks is counted too, and every block is timed with the
    caches as the whole model leaves them, which timing blocks alone would not reproduce. The first
    (untimed) callable is for :func:`bench.timing.interleaved_warm`; the first ``warmup`` calls of
    the second are not recorded.
    """
    clock = time.perf_counter
    marks: list[tuple[int, float]] = []

    def hook(i: int) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def mark(_module: nn.Module, _args: tuple[Any, ...]) -> None:
            if cuda:
                torch.cuda.synchronize()
            marks.append((i, clock()))

        return mark

    for i, name in enumerate(names):
        model.get_submodule(name).register_forward_pre_hook(hook(i))
    calls = [0]

    def forward() -> float:
        marks.clear()
        with torch.inference_mode():
            model(x)
        if cuda:
            torch.cuda.synchronize()
        return clock()

    def untimed() -> None:
        forward()

    def recorded() -> None:
        end = forward()
        calls[0] += 1
        if calls[0] <= warmup:
            return
        spent = [0.0] * len(names)
        for k, (i, t) in enumerate(marks):
            spent[i] += (marks[k + 1][1] if k + 1 < len(marks) else end) - t
        for i, v in enumerate(spent):
            store[i].append(v)

    return untimed, recorded


def _relative_errors(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    errs = [abs(p - m) / m for p, m in zip(pred, meas)]
    return {
        "median_abs_rel_error": statistics.median(errs),
        "max_abs_rel_error": max(errs),
        "within_10pct": sum(e <= 0.10 for e in errs) / len(errs),
    }


def fit_calibration(raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """``(offset_ms, scale)`` minimising the squared relative error of ``offset + scale * raw``.

    The offset may be negative (blocks timed as separate programs each pay the runtime's per-call
    cost, which the whole model pays once) as long as the prediction stays positive at the smallest
    raw sum fitted on (the calibration configs include the space's smallest); otherwise, or with too
    few or too similar configs, a scale alone.
    """
    r, y = np.asarray(raw, float), np.asarray(measured, float)
    w = 1.0 / y
    if len(r) >= 2 and np.ptp(r) > 0:
        a_mat = np.stack([w, w * r], axis=1)
        (offset, scale), *_ = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)
        if scale > 0 and offset + scale * r.min() > 0:
            return float(offset), float(scale)
    return 0.0, float(np.sum(w * w * r * y) / np.sum(w * w * r * r))


def build_lut(
    model: SlimmableNet,
    *,
    profile: str,
    backend: str = "torch",
    timing: TimingSettings = TimingSettings(),
    levels: int = 3,
    calibrate: int = 5,
    validate: int = 20,
    on_stage: Callable[[str], None] | None = None,
) -> LatencyLUT:
    """Time ``model``'s blocks on a channel grid, calibrate on ``calibrate`` configs, validate on ``validate``.

    ``model``: a slimmable model (weights do not matter for timing: a fresh ``build_model`` is
    fine). ``backend``: torch or cuda (the grid configs are whole sliced models whose blocks are
    timed in place), onnxruntime or executorch (each distinct block of the grid configs is exported
    and timed as its own program, whole configs as exported models); calibration configs are the uniform lowest, middle and full widths plus random
    ones; validation configs are random (``timing``'s seed) and distinct from them. All are timed
    in one interleaved run with ``timing``'s threads, batch (None: 1), rounds and allocator (as
    ``run_bench`` times, so the table and the measurements it is used with see the same
    allocator). Returns the table with ``report`` filled in.
    """
    if backend not in LUT_BACKENDS:
        raise BenchError(
            f"--backend {backend}: the latency table is built for {', '.join(LUT_BACKENDS)}; choose one of them"
        )
    if backend == "cuda" and not torch.cuda.is_available():
        raise BenchError(
            "no CUDA device here: torch.cuda.is_available() is False; build the table with --backend torch"
        )
    for flag, value, least in (
        ("--lut-levels", levels, 2),
        ("--lut-calibrate", calibrate, 1),
        ("--lut-validate", validate, 1),
    ):
        if value < least:
            raise BenchError(f"{flag} {value}: must be at least {least}")
    if model.ctx.bn_stats is not None:
        raise BenchError(
            "build the latency table from a model without a front point's BN statistics active, "
            "e.g. a fresh build_model(arch, **kwargs): timing does not depend on weights"
        )
    timing = timing.resolved(lambda: 1)
    say = on_stage or (lambda _msg: None)
    allocator = STEADY_MALLOC if timing.steady_memory and steady_malloc() else None
    space = model.space
    units = discover_units(model)
    names = [u.name for u in units]
    grid = grid_levels(space, levels)
    sizes = [len(lv) for lv in grid]
    widths = [list(lv.values()) for lv in grid]
    gen = torch.Generator().manual_seed(timing.seed)
    calib = [space.smallest(), space.uniform((space.low + space.high) / 2), space.uniform(space.high)]
    calib = (calib + space.sample(gen, max(0, calibrate - 3)))[:calibrate]
    check = space.sample(gen, validate)
    configs = calib + check
    assignments = _covering(units, sizes)
    grid_alphas = [[widths[d][assignment[d]] for d in range(space.dims)] for assignment in assignments]
    timed = _time_compiled if backend in SERVED else _time_in_place
    stores, measured = timed(model, names, grid_alphas, configs, backend, timing, gen, say, len(calib))
    tables = []
    for i, u in enumerate(units):
        pooled: dict[tuple[int, ...], list[float]] = {}
        for assignment, store in zip(assignments, stores):
            pooled.setdefault(tuple(assignment[d] for d in u.dims), []).extend(store[i])
        combos = list(itertools.product(*[range(sizes[d]) for d in u.dims]))
        if any(not pooled.get(c) for c in combos):
            raise BenchError(
                f"block '{u.name}' of {model.arch} did not run in the forward pass; the latency "
                "table needs every slimmable block to run once per inference"
            )
        tables.append(
            UnitTable(
                u.name,
                list(u.dims),
                [list(grid[d]) for d in u.dims],
                [statistics.median(pooled[c]) * 1e3 for c in combos],
            )
        )
    lut = LatencyLUT(
        profile=profile,
        backend=backend,
        threads=timing.threads,
        batch=timing.batch_size,
        arch=model.arch,
        arch_kwargs=dict(model.arch_kwargs),
        input_size=list(model.input_size),
        width_space=space.to_dict(),
        units=tables,
        created=utc_timestamp(),
        host=host_description(backend),
    )
    raw = [lut.raw_ms(space.channels(a)) for a in configs]
    k = len(calib)
    lut.offset_ms, lut.scale = fit_calibration(raw[:k], measured[:k])
    pred = [lut.offset_ms + lut.scale * r for r in raw]
    lut.report = {
        "levels": levels,
        "blocks_timed": "exported alone" if backend in SERVED else "in place",
        "units": len(units),
        "grid_configs": len(assignments),
        "warmup": timing.warmup,
        "runs": timing.runs,
        "allocator": allocator,
        "calibration": {
            "configs": k,
            "offset_ms": lut.offset_ms,
            "scale": lut.scale,
            "raw_errors": _relative_errors(raw[:k], measured[:k]),
        },
        "validation": {
            "configs": len(check),
            "raw": _relative_errors(raw[k:], measured[k:]),
            **_relative_errors(pred[k:], measured[k:]),
        },
        "rows": [
            {
                "role": "calibrate" if i < k else "validate",
                "alpha": [round(v, 4) for v in a],
                "measured_ms": measured[i],
                "raw_ms": raw[i],
                "predicted_ms": pred[i],
            }
            for i, a in enumerate(configs)
        ],
    }
    return lut


_Timed = tuple[list[list[list[float]]], list[float]]


def _time_in_place(
    model: SlimmableNet,
    names: Sequence[str],
    grid_alphas: Sequence[Sequence[float]],
    configs: Sequence[Sequence[float]],
    backend: str,
    timing: TimingSettings,
    gen: torch.Generator,
    say: Callable[[str], None],
    calibrating: int,
) -> _Timed:
    """Eager torch (CPU or CUDA): per grid config, each unit's times with the blocks timed in place;
    and each whole config's median in ms."""
    cuda = backend == "cuda"
    device = "cuda" if cuda else "cpu"
    batch, warmup = timing.batch_size, timing.warmup
    stores: list[list[list[float]]] = [[[] for _ in names] for _ in grid_alphas]
    with torch_threads(timing.threads):
        # Grid configs (blocks timed in place) and whole-model configs share one interleaved run, so
        # that load changes on the host hit the table and the configs it is checked on alike.
        candidates: dict[str, Any] = {}
        for j, alpha in enumerate(grid_alphas):
            # The plain twin, not slice_model's GraphModule: a traced graph has no block modules to hook.
            sliced = plain_twin(model, alpha).to(device)
            x = model.input_specs[0].batch(batch, gen).to(device)
            candidates[f"grid{j}"] = _timed_in_context(sliced, names, x, cuda, warmup, stores[j])
        for i, a in enumerate(configs):
            candidates[f"config{i}"] = torch_callable(
                slice_model(model, a).eval(), model.input_specs[0].batch(batch, gen), cuda
            )
        say(
            f"timing {len(grid_alphas)} grid configs ({len(names)} blocks timed in place) and "
            f"{len(configs)} whole-model configs ({calibrating} to calibrate, {len(configs) - calibrating} "
            "to validate), interleaved"
        )
        timings = interleaved_warm(candidates, warmup=warmup, runs=timing.runs)
    return stores, [timings[f"config{i}"].median * 1e3 for i in range(len(configs))]


def _unit_inputs(twin: nn.Module, names: Sequence[str], x: torch.Tensor) -> list[torch.Tensor]:
    """The tensor each unit of ``twin`` receives when ``twin(x)`` runs."""
    seen: dict[int, torch.Tensor] = {}
    handles = [
        twin.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, i=i: seen.setdefault(i, args[0].detach().clone())
        )
        for i, name in enumerate(names)
    ]
    with torch.inference_mode():
        twin(x)
    for h in handles:
        h.remove()
    return [seen[i] for i in range(len(names))]


def _time_compiled(
    model: SlimmableNet,
    names: Sequence[str],
    grid_alphas: Sequence[Sequence[float]],
    configs: Sequence[Sequence[float]],
    backend: str,
    timing: TimingSettings,
    gen: torch.Generator,
    say: Callable[[str], None],
    calibrating: int,
) -> _Timed:
    """ONNX Runtime or ExecuTorch: each distinct block (same layers, same input shape) of the grid
    configs exported and timed alone, and each whole config exported and timed; one interleaved run."""
    spec = served_format(backend)
    fmt, batch, threads = spec.name, timing.batch_size, timing.threads
    spec.require()
    pool = serving(backend).pool_threads
    if pool is not None:
        pool(threads)  # before any program loads, parity checks included
    blocks: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    keys: list[list[str]] = []
    for alpha in grid_alphas:
        twin = plain_twin(model, alpha)
        inputs = _unit_inputs(twin, names, model.input_specs[0].batch(batch, gen))
        row = []
        for name, x in zip(names, inputs):
            block = twin.get_submodule(name)
            key = f"{block!r}|{tuple(x.shape)}"
            blocks.setdefault(key, (block, x))
            row.append(key)
        keys.append(row)
    say(
        f"exporting {len(blocks)} distinct blocks and {len(configs)} whole-model configs "
        f"({calibrating} to calibrate, {len(configs) - calibrating} to validate) to {fmt}"
    )
    ext = spec.ext
    candidates: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pareco-lut-") as scratch:
        folder = Path(scratch)
        programs = [(f"block{k}", block, x) for k, (block, x) in enumerate(blocks.values())]
        programs += [
            (f"config{i}", slice_model(model, a).eval(), model.input_specs[0].batch(batch, gen))
            for i, a in enumerate(configs)
        ]
        for key, module, x in programs:
            path = folder / f"{key}{ext}"
            export_point(module.eval(), tuple(x.shape[1:]), fmt, path, batch=int(x.shape[0]))
            candidates[key] = load_runner(fmt, path, threads).bind(x)
        say(f"timing {len(candidates)} {backend} programs, interleaved")
        timings = interleaved_warm(candidates, warmup=timing.warmup, runs=timing.runs)
    block_ms = {key: timings[f"block{k}"].median for k, key in enumerate(blocks)}
    stores = [[[block_ms[key]] for key in row] for row in keys]
    return stores, [timings[f"config{i}"].median * 1e3 for i in range(len(configs))]


@dataclass
class SavedTable:
    """A latency table built and saved: beside a front's manifest, or where a bare model's was asked for.

    ``profile``: the device profile it predicts; ``predicted_ms``: its prediction for each of the
    front's points (empty for a bare model).
    """

    lut: LatencyLUT
    path: Path
    profile: DeviceProfile
    predicted_ms: dict[str, float]


def build_saved_lut(
    source: Front | SlimmableNet,
    backend: str,
    *,
    out: Path | None = None,
    timing: TimingSettings = TimingSettings(),
    profile: str | None = None,
    levels: int = 3,
    calibrate: int = 5,
    validate: int = 20,
    update: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> SavedTable:
    """Build the latency table of ``source``'s architecture (timed by :func:`build_lut`) and save it.

    ``source``: a front (its model built once it fits the front's weight file:
    :func:`~pareco_runtime.model_check.build_front_model`; the table saved as ``NAME.lut.<profile>.json``
    beside the manifest), or a bare slimmable model, as ``pareco train --cost latency@FILE`` will build
    it (saved at ``out``). ``profile``: the device profile name (default
    ``<host>-<backend>-t<threads>-b<batch>``). With ``update`` (a front only), the predictions are
    written into the manifest's ``latency_predicted_ms`` under that profile, for points without a
    measurement (:func:`bench.device.write_profile`).
    """
    timing = timing.resolved(lambda: 1)
    name = device_profile(backend, timing.threads, timing.batch_size, profile).name
    if isinstance(source, Front):
        if source.path is None:
            raise BenchError("the front has no manifest file to save the table beside; save it first")
        manifest: Path | None = source.path
        path, model, points = lut_path(source.path, name), build_front_model(source), source.points
    elif out is None:
        raise BenchError("a table built for a bare model needs the file to save it as; give --out FILE")
    else:
        manifest, path, model, points = None, out, source, []
    lut = build_lut(
        model,
        profile=name,
        backend=backend,
        timing=timing,
        levels=levels,
        calibrate=calibrate,
        validate=validate,
        on_stage=on_stage,
    )
    prof = device_profile(
        backend, timing.threads, timing.batch_size, profile, allocator=lut.report["allocator"]
    )
    predicted = lut.predict_points(points)
    # Two builds for one profile at once: the table's lock is held until the manifest has this
    # table's predictions, so the file beside the manifest and its predictions come from one build.
    with locked(path):
        lut.save(path)
        if update and manifest is not None:
            write_profile(manifest, prof, {}, None, predicted)
    return SavedTable(lut, path, prof, predicted)
