"""Latency (and, where the host exposes it, energy) of front points per backend, written into the manifest.

Backends: ``torch`` (the sliced eager model under ``torch.inference_mode``), ``onnxruntime`` (the
exported ONNX file, CPU provider), ``executorch`` (the ``.pte`` file lowered to XNNPACK) and
``cuda`` (the eager model on the GPU). Threads are fixed explicitly, one thread standing for one
phone core by default. Every (point, backend) pair is timed in one process, round-robin
(:func:`bench.timing.interleaved`), because these machines drift 10-80 % between processes, with
each timed call right after an untimed call of the same model (:func:`interleaved_warm`), so that
the figures are steady-state inference and not caches emptied by the other candidates. They are
medians, p90s and IQRs, and each backend's median is also given as a ratio to torch eager's for
the same point. glibc's malloc is told to keep freed memory (:func:`steady_malloc`).

A measurement becomes a device profile (name, runtime, threads, batch, host, date, versions,
energy source) and per-point ``latency_ms`` in the manifest (:func:`write_profile`), which is
what ``pareco select --budget 5ms@PROFILE`` reads.

Energy is read from RAPL (``/sys/class/powercap/intel-rapl:0/energy_uj``, CPU backends) or NVML
(``cuda``) when readable; elsewhere none is recorded and none is claimed.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import importlib.metadata
import math
import platform
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.timing import Timing, interleaved
from export.exporter import export_point
from export.formats import get_format, load_runner, require, set_executorch_threads
from export.index import find_export, merge_index
from pareco_runtime.front import DeviceProfile

if TYPE_CHECKING:
    from pareco_runtime import FrontPoint, SlimmableRuntime

BACKENDS = ("torch", "onnxruntime", "executorch", "cuda")
_EXPORT_FORMAT = {"onnxruntime": "onnx", "executorch": "executorch"}
_RAPL = Path("/sys/class/powercap/intel-rapl:0")
# Energy is read over at least this long per candidate: RAPL and NVML counters update about every millisecond.
_ENERGY_SECONDS = 0.5


class BenchError(ValueError):
    """A benchmark that cannot run as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------- profiles


def sanitise_profile_name(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9_.-]`` replaced by '-' (budget syntax)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    if not clean:
        raise BenchError(f"profile name {name!r} has no usable characters; use letters, digits, '_', '.', '-'")
    return clean


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def host_description(backend: str = "torch") -> str:
    """``"<host name> (<CPU model>[, <GPU name>])"`` for the device profile."""
    parts = [cpu_model()]
    if backend == "cuda" and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    return f"{platform.node() or 'unknown-host'} ({', '.join(parts)})"


def default_profile_name(backend: str, threads: int, batch: int) -> str:
    """``<host>-<backend>-t<threads>-b<batch>``, sanitised."""
    return sanitise_profile_name(f"{platform.node() or 'host'}-{backend}-t{threads}-b{batch}")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_versions(backend: str) -> dict[str, str]:
    """Versions of what runs the backend: python, torch, and onnxruntime / executorch / CUDA where used."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    if backend == "onnxruntime":
        out["onnxruntime"] = _version("onnxruntime") or "unknown"
    elif backend == "executorch":
        out["executorch"] = _version("executorch") or "unknown"
    elif backend == "cuda":
        out["cuda"] = str(torch.version.cuda)
    return out


def backend_runtime(backend: str) -> str:
    """The device profile's ``runtime`` text: the backend, its version and how it is configured."""
    v = backend_versions(backend)
    return {
        "torch": f"torch {v['torch']} eager (inference_mode)",
        "onnxruntime": f"onnxruntime {v.get('onnxruntime')} CPUExecutionProvider (ORT_ENABLE_ALL, sequential)",
        "executorch": f"executorch {v.get('executorch')} XNNPACK",
        "cuda": f"torch {v['torch']} eager cuda {v.get('cuda')}",
    }[backend]


def device_profile(backend: str, threads: int, batch: int, name: str | None = None,
                   energy_source: str | None = None, allocator: str | None = None) -> DeviceProfile:
    """The device profile of measurements made here with ``backend`` at ``threads`` and ``batch``.

    ``allocator``: how memory allocation was set up, when not the process default (recorded in
    ``versions``).
    """
    versions = backend_versions(backend)
    if allocator:
        versions["allocator"] = allocator
    return DeviceProfile(
        name=sanitise_profile_name(name) if name else default_profile_name(backend, threads, batch),
        runtime=backend_runtime(backend), threads=threads, batch=batch, host=host_description(backend),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        versions=versions, energy_source=energy_source)


# ---------------------------------------------------------------------------------------------- timing


def interleaved_warm(candidates: Mapping[str, Callable[[], object] | tuple[Callable[[], object], Callable[[], object]]],
                     warmup: int, runs: int) -> dict[str, Timing]:
    """:func:`bench.timing.interleaved` where every timed call comes right after an untimed one of the same candidate.

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


# ---------------------------------------------------------------------------------------------- memory

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
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


# ---------------------------------------------------------------------------------------------- energy


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
        except Exception:  # noqa: BLE001 - no pynvml, no driver, or a GPU without an energy counter
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
        return (f"energy from {' and '.join(found).upper()} (whole package or GPU, idle power included: an upper "
                "bound per inference)")
    return ("energy: not measured and not recorded (no readable RAPL counter or NVML on this host); no energy "
            "figure is claimed")


# ---------------------------------------------------------------------------------------------- benchmark


@dataclass
class Measurement:
    """One point on one backend: latency statistics in milliseconds, and energy when measured."""

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


@dataclass
class BenchReport:
    """Everything one ``run_bench`` measured, with the device profile of each backend."""

    measurements: list[Measurement]
    profiles: dict[str, DeviceProfile]
    threads: int
    batch: int
    warmup: int
    runs: int
    energy: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {"threads": self.threads, "batch": self.batch, "warmup": self.warmup, "runs": self.runs,
                "energy": self.energy, "notes": self.notes,
                "profiles": {b: p.to_dict() for b, p in self.profiles.items()},
                "measurements": [asdict(m) for m in self.measurements]}


def check_backends(backends: Sequence[str]) -> list[str]:
    """The backends, deduplicated in order; BenchError for unknown ones or for cuda without a GPU."""
    if not backends:
        raise BenchError(f"give at least one --backend ({', '.join(BACKENDS)})")
    out: list[str] = []
    for b in backends:
        if b not in BACKENDS:
            raise BenchError(f"unknown backend '{b}'; choose from {', '.join(BACKENDS)}")
        if b == "cuda" and not torch.cuda.is_available():
            raise BenchError("no CUDA device here: torch.cuda.is_available() is False; bench a CPU backend "
                             "(torch, onnxruntime, executorch) or run on a machine with a GPU")
        if b not in out:
            out.append(b)
    return out


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block, the previous count restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def torch_callable(model: torch.nn.Module, x: torch.Tensor, cuda: bool = False) -> Callable[[], object]:
    """A zero-argument callable running ``model(x)`` under ``inference_mode`` (synchronised on a GPU)."""
    if not cuda:
        def run() -> object:
            with torch.inference_mode():
                return model(x)
        return run

    model, x = model.cuda(), x.cuda()

    def run_cuda() -> object:
        with torch.inference_mode():
            y = model(x)
        torch.cuda.synchronize()
        return y
    return run_cuda


def _exported_file(rt: SlimmableRuntime, point: FrontPoint, model: torch.nn.Module, backend: str, batch: int,
                   exports: Path | None, scratch: Path, say: Callable[[str], None]) -> Path:
    """The ONNX or ``.pte`` file of ``point``: reused from ``exports`` when it holds a matching one, else
    exported there (or to ``scratch`` when no export folder is given) with its parity check."""
    fmt = _EXPORT_FORMAT[backend]
    sha = rt.manifest["weights"]["sha256"]
    if exports is not None:
        found = find_export(exports, point.id, fmt, sha, batch)
        if found is not None:
            say(f"reusing {found} for {backend}")
            return found
    say(f"exporting {point.id} for {backend}")
    folder = exports if exports is not None else scratch
    res = export_point(model, rt.input_size, fmt, folder / f"{point.id}{get_format(fmt).ext}", batch=batch,
                       point=point.id)
    if exports is not None:
        merge_index(exports, [res.to_entry(sha)])
    return res.path


def run_bench(rt: SlimmableRuntime, points: Sequence[FrontPoint], backends: Sequence[str], *, threads: int = 1,
              batch: int = 1, warmup: int = 30, runs: int = 200, profile: str | None = None,
              exports: str | Path | None = None, seed: int = 0, steady_memory: bool = True,
              on_stage: Callable[[str], None] | None = None) -> BenchReport:
    """Time every point of ``points`` on every backend of ``backends``, interleaved in this process.

    ``threads``: torch's thread count, onnxruntime's intra-op threads and ExecuTorch's thread
    pool. ``batch``: the batch size timed (ExecuTorch files are exported for it). ``profile``: the
    profile name (one backend only; default ``<host>-<backend>-t<threads>-b<batch>``).
    ``exports``: a folder of earlier ``pareco export`` files to reuse (matching weights, format and
    batch); missing ones are exported into it. Without it, files go to a temporary folder.
    ``steady_memory``: call :func:`steady_malloc` first (process-wide; recorded in the profiles).
    ``on_stage`` receives progress messages. Energy is measured after the timing, per candidate,
    where RAPL/NVML is readable.
    """
    backends = check_backends(backends)
    if threads < 1 or batch < 1 or runs < 1 or warmup < 0:
        raise BenchError(f"need threads >= 1, batch >= 1, runs >= 1 and warmup >= 0; got threads={threads}, "
                         f"batch={batch}, runs={runs}, warmup={warmup}")
    if profile is not None and len(backends) > 1:
        raise BenchError("--profile names one device profile but several --backend values were given; leave "
                         "--profile out (each backend gets its own default name) or run once per backend")
    if not points:
        raise BenchError("no points to benchmark")
    for b in backends:
        if b in _EXPORT_FORMAT:
            require(_EXPORT_FORMAT[b])
    # Before any ExecuTorch program is loaded (parity checks included): the pool cannot change after.
    et_threads = set_executorch_threads(threads) if "executorch" in backends else None
    say = on_stage or (lambda _msg: None)
    export_dir = Path(exports) if exports is not None else None
    notes: list[str] = []
    allocator = STEADY_MALLOC if steady_memory and steady_malloc() else None
    if allocator:
        notes.append(allocator)
    meters = {b: EnergyMeter.for_backend(b) for b in backends}
    profiles = {b: device_profile(b, threads, batch, profile, meters[b].source if meters[b] else None, allocator)
                for b in backends}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *rt.input_size, generator=gen)
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="pareco-bench-") as scratch:
        candidates: dict[tuple[str, str], Callable[[], object]] = {}
        for p in points:
            model = rt.standalone(p)
            for b in backends:
                if b in ("torch", "cuda"):
                    candidates[(p.id, b)] = torch_callable(model if b == "torch" else rt.standalone(p), x, b == "cuda")
                    continue
                path = _exported_file(rt, p, model, b, batch, export_dir, Path(scratch), say)
                candidates[(p.id, b)] = load_runner(_EXPORT_FORMAT[b], path, threads).bind(x)
        if et_threads is not None:
            notes.append(f"ExecuTorch thread pool set to {threads} via its experimental _unsafe_reset_threadpool "
                         "(process-wide)" if et_threads else
                         "this ExecuTorch build cannot set its thread count; it used its default pool")
        say(f"timing {len(candidates)} candidates: {warmup} warm-up and {runs} timed rounds, interleaved (each timed "
            "call right after an untimed one of the same candidate)")
        named = {f"{pid}|{b}": fn for (pid, b), fn in candidates.items()}
        timings = interleaved_warm(named, warmup=warmup, runs=runs)
        energy: dict[tuple[str, str], float] = {}
        for (pid, b), fn in candidates.items():
            meter = meters[b]
            if meter is not None:
                energy[(pid, b)] = meter.per_call_mj(fn, timings[f"{pid}|{b}"].median)
    measurements = []
    for p in points:
        base = timings[f"{p.id}|torch"].median if "torch" in backends else None
        for b in backends:
            t = timings[f"{p.id}|{b}"]
            measurements.append(Measurement(
                point=p.id, backend=b, profile=profiles[b].name, mflops=p.mflops, median_ms=t.median * 1e3,
                p90_ms=t.p90 * 1e3, iqr_ms=t.iqr * 1e3, runs=runs,
                ratio_to_torch=None if base is None else t.median / base, energy_mj=energy.get((p.id, b))))
    if warmup < 30 or runs < 200:
        notes.append(f"{warmup} warm-up / {runs} timed runs is below the 30 / 200 used for reported figures")
    return BenchReport(measurements, profiles, threads, batch, warmup, runs, energy_note(meters), notes)


# ---------------------------------------------------------------------------------------------- manifest


def write_profile(manifest_path: str | Path, profile: DeviceProfile, latency_ms: dict[str, float],
                  energy_mj: dict[str, float] | None = None,
                  predicted_ms: dict[str, float] | None = None) -> None:
    """Record ``profile`` and its per-point figures in the manifest, validated and written atomically.

    The profile replaces a same-named one in ``device_profiles``. ``latency_ms`` / ``energy_mj``
    ({point id: value}) are measured values; ``predicted_ms`` goes to ``latency_predicted_ms`` of
    points that have no measured latency for this profile. The manifest is re-read just before
    writing, so figures other commands wrote meanwhile are kept.
    """
    from pareco_runtime.fileformat import load_manifest, save_manifest

    manifest = load_manifest(manifest_path, verify_weights=False)
    ids = {p["id"] for p in manifest["points"]}
    unknown = sorted(set(latency_ms) - ids)
    if unknown:
        raise BenchError(f"{manifest_path}: no point {unknown[0]!r} in this manifest; it changed since the benchmark")
    manifest["device_profiles"] = [p for p in manifest["device_profiles"] if p["name"] != profile.name]
    manifest["device_profiles"].append(profile.to_dict())
    for p in manifest["points"]:
        pid = p["id"]
        if pid in latency_ms:
            p.setdefault("latency_ms", {})[profile.name] = round(float(latency_ms[pid]), 6)
        if energy_mj and pid in energy_mj:
            p.setdefault("energy_mj", {})[profile.name] = round(float(energy_mj[pid]), 6)
        if predicted_ms and pid in predicted_ms and profile.name not in p.get("latency_ms", {}):
            p.setdefault("latency_predicted_ms", {})[profile.name] = round(float(predicted_ms[pid]), 6)
    save_manifest(manifest_path, manifest)
