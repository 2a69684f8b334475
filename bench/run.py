"""``pareco bench``'s measurement: latency (and, where the host exposes it, energy) of front points per
backend, and recording it in the manifest.

Backends (:mod:`bench.backends`): ``torch`` (the sliced eager model under ``torch.inference_mode``),
``cuda`` (the eager model on the GPU), and each compiled runtime of :data:`export.formats.SERVED`
(ONNX Runtime, ExecuTorch) running the point's exported file. Threads are fixed explicitly, one thread standing for one
phone core by default. Every (point, backend) pair is timed in one process, round-robin
(:func:`bench.timing.interleaved`), because these machines drift 10-80 % between processes, with
each timed call right after an untimed call of the same model (:func:`bench.timing.interleaved_warm`),
so that the figures are steady-state inference and not caches emptied by the other candidates. They
are medians, p90s and IQRs, and each backend's median is also given as a ratio to torch eager's for
the same point. glibc's malloc is told to keep freed memory (:func:`bench.timing.steady_malloc`).

:func:`record_report` writes each backend's figures into the manifest as a device profile
(:mod:`bench.device`), with predicted latencies from a look-up table built for that profile.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.backends import check_backends
from bench.device import device_profile, write_profile
from bench.energy import EnergyMeter, energy_note
from bench.errors import BenchError
from bench.timing import (
    STEADY_MALLOC,
    TimingSettings,
    interleaved_warm,
    steady_malloc,
    torch_callable,
    torch_threads,
)
from export.exporter import export_points
from export.formats import SERVED, load_runner, served_format, serving
from export.index import find_export, recorded_exports
from pareco_runtime.latency_table import fitting_lut
from pareco_runtime.manifest import DeviceProfile

if TYPE_CHECKING:
    from pareco_runtime import Front, FrontPoint, SlimmableRuntime


@dataclass
class Measurement:
    """One point on one backend: latency statistics in milliseconds, and energy when measured.

    ``precision``: "fp32", or "int8" for the point's quantized program on that backend, whose
    ``ratio_to_fp32`` is its median over the fp32 program's on the same backend in the same run."""

    point: str
    backend: str
    profile: str
    mflops: float
    median_ms: float
    p90_ms: float
    iqr_ms: float
    runs: int
    ratio_to_torch: float | None = None
    energy_mj: float | None = None
    precision: str = "fp32"
    ratio_to_fp32: float | None = None


@dataclass
class BenchReport:
    """Everything one ``run_bench`` measured, with the device profile of each backend."""

    measurements: list[Measurement]
    profiles: dict[str, DeviceProfile]
    timing: TimingSettings
    energy: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "threads": self.timing.threads,
            "batch": self.timing.batch_size,
            "warmup": self.timing.warmup,
            "runs": self.timing.runs,
            "energy": self.energy,
            "notes": self.notes,
            "profiles": {b: p.to_dict() for b, p in self.profiles.items()},
            "measurements": [asdict(m) for m in self.measurements],
        }


@dataclass
class _Programs:
    """Where the timed files of a run come from and what is said about them: the ``exports`` folder the
    user named (None: files are exported into ``scratch``), whether its int8 files are timed too, the
    ``notes`` the profile records and ``say`` for progress."""

    exports: Path | None
    scratch: Path
    int8: bool
    notes: list[str]
    say: Callable[[str], None]


def _exported_file(
    rt: SlimmableRuntime, point: FrontPoint, backend: str, batch: int, programs: _Programs
) -> Path:
    """The ONNX or ``.pte`` file of ``point``: reused from ``programs.exports`` when it holds one
    recorded as accepting ``batch``, else exported there (replacing a record for another batch) or to
    ``programs.scratch`` when no export folder is given, with its parity check, labels and record
    (:func:`export.exporter.export_points`)."""
    exports, say = programs.exports, programs.say
    fmt = served_format(backend).name
    sha = rt.front.weights_sha256
    if exports is not None:
        found = find_export(exports, point.id, fmt, sha, batch)
        if found is not None:
            say(f"reusing {found} for {backend}")
            return found
    unfit = "".join(
        f" ({path.name} accepts {'an unrecorded batch' if r is None else r.describe()}, not batch {batch})"
        for path, r in ([] if exports is None else recorded_exports(exports, point.id, fmt, sha))
    )
    say(f"exporting {point.id} for {backend}{unfit}")
    (res,) = export_points(
        rt, [point], [fmt], exports if exports is not None else programs.scratch, batch=batch
    )
    return res.path


def _file_calls(
    rt: SlimmableRuntime,
    point: FrontPoint,
    backends: Sequence[str],
    timing: TimingSettings,
    x: tuple[torch.Tensor, ...],
    programs: _Programs,
) -> dict[tuple[str, str], Callable[[], object]]:
    """The timed calls of ``point`` per backend: the sliced model in torch (or on the GPU), its exported
    file in a compiled runtime, and with ``programs.int8`` its int8 file of ``programs.exports`` under
    the key ``<backend>|int8`` (noted when there is none)."""
    exports = programs.exports
    model = rt.standalone(point)
    batch, threads = timing.batch_size, timing.threads
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    for b in backends:
        if b in ("torch", "cuda"):
            calls[(point.id, b)] = torch_callable(
                model if b == "torch" else rt.standalone(point), x, b == "cuda"
            )
            continue
        fmt = served_format(b).name
        path = _exported_file(rt, point, b, batch, programs)
        calls[(point.id, b)] = load_runner(fmt, path, threads).bind(*x)
        if programs.int8 and exports is not None:
            found = find_export(exports, point.id, fmt, rt.front.weights_sha256, batch, "int8")
            if found is None:
                programs.notes.append(f"{point.id}: no int8 {fmt} program for batch {batch} in {exports}")
            else:
                calls[(point.id, f"{b}|int8")] = load_runner(fmt, found, threads).bind(*x)
    return calls


def _runtime_calls(
    rt: SlimmableRuntime,
    points: Sequence[FrontPoint],
    backends: Sequence[str],
    threads: int,
    x: tuple[torch.Tensor, ...],
    say: Callable[[str], None],
) -> dict[tuple[str, str], tuple[Callable[[], object], Callable[[], object]]]:
    """(untimed, timed) calls of ``served(x)`` per point and backend as an app makes them, one runtime
    per backend (``rt`` itself for torch): the untimed call switches to the point first, so the timed
    one right after it runs that point. Every point's program is loaded here, before timing."""
    from pareco_runtime import SlimmableRuntime

    assert rt.front.path is not None  # run_bench refuses an unsaved front
    say(f"loading the runtime on {', '.join(backends)} (its programs are found or exported on first use)")
    served = {
        b: rt
        if b == "torch"
        else SlimmableRuntime.load(rt.front.path, backend=b, threads=threads, model=rt.model_factory)
        for b in backends
    }
    calls: dict[tuple[str, str], tuple[Callable[[], object], Callable[[], object]]] = {}
    for p in points:
        for b, runtime in served.items():
            runtime.switch(p)
            calls[(p.id, b)] = (
                functools.partial(_switch_and_run, runtime, p, x),
                functools.partial(runtime, *x),
            )
    return calls


def _switch_and_run(runtime: SlimmableRuntime, point: FrontPoint, x: tuple[torch.Tensor, ...]) -> object:
    runtime.switch(point)
    return runtime(*x)


def recorded_batch(
    exports: Path | None, points: Sequence[FrontPoint], backends: Sequence[str], weights_sha256: str
) -> int:
    """The batch to time when none is given: the static batch N of the fixed-batch files (ExecuTorch)
    recorded in ``exports`` for ``points``, when they have one that every recorded file accepts; 1
    when none is static (or nothing is recorded); BenchError when the recorded files share no batch."""
    fixed = [SERVED[b] for b in backends if b in SERVED and not SERVED[b].dynamic_batch]
    if exports is None or not fixed:
        return 1
    recorded = {
        f"{p.id} ({fmt.name})" if len(fixed) > 1 else p.id: r
        for fmt in fixed
        for p in points
        for _, r in recorded_exports(exports, p.id, fmt.name, weights_sha256)
        if r is not None
    }
    statics = sorted({r.low for r in recorded.values() if r.is_static})
    batch = statics[0] if statics else 1
    if len(statics) > 1 or not all(r.accepts(batch) for r in recorded.values()):
        listing = ", ".join(f"{pid} {r.describe()}" for pid, r in recorded.items())
        raise BenchError(
            f"{exports}: the {' and '.join(f.title for f in fixed)} files recorded there share no batch "
            f"size ({listing}); give --batch B (a file that does not accept B is exported again for it)"
        )
    return batch


def run_bench(
    rt: SlimmableRuntime,
    points: Sequence[FrontPoint],
    backends: Sequence[str],
    timing: TimingSettings = TimingSettings(),
    *,
    profile: str | None = None,
    exports: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
    int8: bool = False,
    through_runtime: bool = False,
) -> BenchReport:
    """Time every point of ``points`` on every backend of ``backends``, interleaved in this process.

    ``timing``: threads (torch's thread count, onnxruntime's intra-op threads and ExecuTorch's
    thread pool), rounds, allocator and seed; its batch is the batch size timed (ExecuTorch files
    are exported for it), or, when None, the batch the ``.pte`` files recorded in ``exports`` for
    these points were exported for (:func:`recorded_batch`), else 1. ``profile``: the profile name
    (one backend only; default ``<host>-<backend>-t<threads>-b<batch>``). ``exports``: a folder of
    earlier ``pareco export`` files to reuse (matching weights, format and batch); missing ones are
    exported into it. Without it, files go to a temporary folder. ``steady_memory`` (recorded in
    the profiles) is process-wide. ``on_stage`` receives progress messages. Energy is measured
    after the timing, per candidate, where RAPL/NVML is readable. ``int8``: also time the int8
    programs ``pareco export --int8`` wrote into ``exports`` for these points on their compiled
    backends (a point without one is noted and timed in fp32 only; they cannot be made here, which
    needs calibration images). ``through_runtime``: time what an app calls instead, ``rt(x)`` of
    ``SlimmableRuntime.load(manifest, backend=b, threads=threads)`` right after ``rt.switch(point)``
    (torch: the slimmable model in place; compiled backends: the programs the runtime finds or
    exports, with its input check, lock and output copy); profiles are named
    ``<host>-<backend>-rt-t<threads>-b<batch>``; the only way to time a front whose network was
    converted in parts (``make_slimmable(..., submodules=)``), on the torch backend, called with its
    conversion example's arguments (a detector's list of images) whatever ``batch`` says.
    """
    backends = check_backends(backends)
    export_dir = Path(exports) if exports is not None else None
    timing = timing.resolved(lambda: recorded_batch(export_dir, points, backends, rt.front.weights_sha256))
    threads, batch = timing.threads, timing.batch_size
    if profile is not None and len(backends) > 1:
        raise BenchError(
            "--profile names one device profile but several --backend values were given; leave "
            "--profile out (each backend gets its own default name) or run once per backend"
        )
    if not points:
        raise BenchError("no points to benchmark")
    if through_runtime and (int8 or "cuda" in backends or export_dir is not None or rt.front.path is None):
        raise BenchError(
            "--through-runtime times the runtime's own torch, onnxruntime and executorch backends, which "
            "serve fp32 points from the programs beside a saved manifest: drop --int8, --exports and cuda"
        )
    if not rt.model.takes_batches and (not through_runtime or backends != ["torch"]):
        raise BenchError(
            "this front's network was converted in parts (make_slimmable(..., submodules=)) and has no "
            "standalone program to time; time what an app calls: --through-runtime --backend torch"
        )
    if int8 and (export_dir is None or not any(b in SERVED for b in backends)):
        raise BenchError(
            f"--int8 times the int8 programs of an export folder on {' or '.join(SERVED)}: give "
            "--exports DIR (where `pareco export --int8` wrote them) and one of those backends"
        )
    compiled = [b for b in backends if b in SERVED]
    for b in compiled:
        SERVED[b].require()
    # Before any program is loaded (parity checks included): a process-wide pool cannot change after.
    pools = [pool(threads) for b in compiled if (pool := serving(b).pool_threads) is not None]
    say = on_stage or (lambda _msg: None)
    notes: list[str] = []
    allocator = STEADY_MALLOC if timing.steady_memory and steady_malloc() else None
    if allocator:
        notes.append(allocator)
    meters = {b: EnergyMeter.for_backend(b) for b in backends}
    profiles = {
        b: device_profile(
            b,
            threads,
            batch,
            profile,
            None if (meter := meters[b]) is None else meter.source,
            allocator,
            through_runtime,
        )
        for b in backends
    }
    gen = torch.Generator().manual_seed(timing.seed)
    # A batch of each input; a network converted in parts takes its conversion example's arguments.
    x = (
        tuple(spec.batch(batch, gen) for spec in rt.input_specs)
        if rt.model.takes_batches
        else rt.model.example_inputs(batch, gen)
    )
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="pareco-bench-") as scratch:
        candidates: dict[tuple[str, str], Any]
        if through_runtime:
            candidates = _runtime_calls(rt, points, backends, threads, x, say)
        else:
            programs = _Programs(export_dir, Path(scratch), int8, notes, say)
            candidates = {}
            for p in points:
                candidates.update(_file_calls(rt, p, backends, timing, x, programs))
        notes.extend(pools)
        say(
            f"timing {len(candidates)} candidates: {timing.warmup} warm-up and {timing.runs} timed rounds, interleaved (each timed "
            "call right after an untimed one of the same candidate)"
        )
        named = {f"{pid}|{b}": fn for (pid, b), fn in candidates.items()}
        timings = interleaved_warm(named, warmup=timing.warmup, runs=timing.runs)
        energy: dict[tuple[str, str], float] = {}
        for (pid, b), fn in candidates.items():
            meter = meters[b.split("|")[0]]  # an int8 candidate "executorch|int8" is its backend's
            if meter is not None:
                call = fn[0] if isinstance(fn, tuple) else fn  # a runtime's call switches to its point
                energy[(pid, b)] = meter.per_call_mj(call, timings[f"{pid}|{b}"].median)
    measurements = []
    for p in points:
        base = timings[f"{p.id}|torch"].median if "torch" in backends else None
        for b in backends:
            fp32 = timings[f"{p.id}|{b}"]
            for precision in ("fp32", "int8"):
                key = b if precision == "fp32" else f"{b}|int8"
                if (p.id, key) not in candidates:
                    continue
                t = timings[f"{p.id}|{key}"]
                measurements.append(
                    Measurement(
                        point=p.id,
                        backend=b,
                        profile=profiles[b].name,
                        mflops=p.mflops,
                        median_ms=t.median * 1e3,
                        p90_ms=t.p90 * 1e3,
                        iqr_ms=t.iqr * 1e3,
                        runs=timing.runs,
                        ratio_to_torch=None if base is None else t.median / base,
                        energy_mj=energy.get((p.id, key)),
                        precision=precision,
                        ratio_to_fp32=None if precision == "fp32" else t.median / fp32.median,
                    )
                )
    if timing.below_reported is not None:
        notes.append(timing.below_reported)
    return BenchReport(measurements, profiles, timing, energy_note(meters), notes)


def record_report(front: Front, report: BenchReport) -> list[str]:
    """Write each backend's medians (and energies) of ``report`` into ``front``'s manifest as its device
    profile; the profile names written.

    Where a look-up table beside the manifest was built for the same profile, backend, threads and
    batch (:func:`pareco_runtime.latency_table.fitting_lut`), its predictions go to the points' ``latency_predicted_ms``
    (for points without a measurement).
    """
    if front.path is None:
        raise BenchError("the front has no manifest file to record the figures in; save it first")
    written = []
    for backend, profile in report.profiles.items():
        mine = [m for m in report.measurements if m.backend == backend and m.precision == "fp32"]
        lut = fitting_lut(front.path, profile.name, backend, report.timing.threads, report.timing.batch_size)
        write_profile(
            front.path,
            profile,
            {m.point: m.median_ms for m in mine},
            {m.point: m.energy_mj for m in mine if m.energy_mj is not None},
            None if lut is None else lut.predict_points(front.points),
            {
                (m.point, m.precision, backend): m.median_ms
                for m in report.measurements
                if m.backend == backend and m.precision != "fp32"
            },
        )
        written.append(profile.name)
    return written
