"""Device profiles: where and how figures were measured (host, backend, versions, threads, batch),
and recording a profile's figures in a front manifest.

A measurement becomes a device profile and per-point ``latency_ms`` in the manifest
(:func:`write_profile`), which is what ``pareco select --budget 5ms@PROFILE`` reads.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from bench.errors import BenchError
from export.formats import SERVED, serving
from pareco_runtime.manifest import DeviceProfile, Front, utc_timestamp


def sanitise_profile_name(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9_.-]`` replaced by '-' (budget syntax)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    if not clean:
        raise BenchError(
            f"profile name {name!r} has no usable characters; use letters, digits, '_', '.', '-'"
        )
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


# What a profile timed through the runtime (``pareco bench --through-runtime``) adds to its name and runtime.
THROUGH_RUNTIME = ("-rt", "; rt(x) of SlimmableRuntime after rt.switch(point)")


def default_profile_name(backend: str, threads: int, batch: int, through_runtime: bool = False) -> str:
    """``<host>-<backend>[-rt]-t<threads>-b<batch>``, sanitised (``-rt``: timed through the runtime)."""
    rt = THROUGH_RUNTIME[0] if through_runtime else ""
    return sanitise_profile_name(f"{platform.node() or 'host'}-{backend}{rt}-t{threads}-b{batch}")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_versions(backend: str) -> dict[str, str]:
    """Versions of what runs the backend: python, torch, and the compiled runtime's package
    (:class:`export.formats.base.Serving`) or CUDA where used."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    if backend in SERVED:
        package = serving(backend).package
        out[package] = _version(package) or "unknown"
    elif backend == "cuda":
        out["cuda"] = str(torch.version.cuda)
    return out


def backend_runtime(backend: str) -> str:
    """The device profile's ``runtime`` text: the backend, its version and how it is configured."""
    v = backend_versions(backend)
    if backend in SERVED:
        spec = serving(backend)
        return spec.runtime.format(version=v[spec.package])
    return {
        "torch": f"torch {v['torch']} eager (inference_mode)",
        "cuda": f"torch {v['torch']} eager cuda {v.get('cuda')}",
    }[backend]


def device_profile(
    backend: str,
    threads: int,
    batch: int,
    name: str | None = None,
    energy_source: str | None = None,
    allocator: str | None = None,
    through_runtime: bool = False,
) -> DeviceProfile:
    """The device profile of measurements made here with ``backend`` at ``threads`` and ``batch``.

    ``allocator``: how memory allocation was set up, when not the process default (recorded in
    ``versions``). ``through_runtime``: timed as an app calls the runtime (:data:`THROUGH_RUNTIME`).
    """
    versions = backend_versions(backend)
    if allocator:
        versions["allocator"] = allocator
    return DeviceProfile(
        name=sanitise_profile_name(name)
        if name
        else default_profile_name(backend, threads, batch, through_runtime),
        runtime=backend_runtime(backend) + (THROUGH_RUNTIME[1] if through_runtime else ""),
        threads=threads,
        batch=batch,
        host=host_description(backend),
        date=utc_timestamp(),
        versions=versions,
        energy_source=energy_source,
    )


def write_profile(
    manifest_path: str | Path,
    profile: DeviceProfile,
    latency_ms: Mapping[str, float],
    energy_mj: Mapping[str, float] | None = None,
    predicted_ms: Mapping[str, float] | None = None,
    variant_ms: Mapping[tuple[str, str, str], float] | None = None,
) -> None:
    """Record ``profile`` and its per-point (and per-variant) figures in the manifest (:meth:`Front.record_profile`), validated
    and written atomically.

    The manifest is re-read and rewritten under its lock (:meth:`Front.update`), so figures other
    commands wrote before or at the same time are kept.
    """
    with Front.update(manifest_path) as front:
        front.record_profile(profile, latency_ms, energy_mj, predicted_ms, variant_ms)
