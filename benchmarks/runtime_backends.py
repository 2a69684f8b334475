"""SlimmableRuntime's own latency per backend: ``rt(x)`` on ONNX Runtime and ExecuTorch against torch.

Run::

    .venv/bin/python -m benchmarks.runtime_backends MANIFEST [--threads 1] [--runs 200]

Loads the front three times (torch, onnxruntime, executorch; the compiled ones with every point's
program: found, or exported on first use, the time of which is reported apart), then times ``rt(x)``
for every point at batch 1 and 8, the three runtimes and all points interleaved round by round in
this process, and prints each backend's median latency as a ratio to torch's (per point, and the
median ratio), switch time (median and p99 of switches between loaded points) and the resident
memory each runtime added when it was loaded (RSS growth, so a rough figure).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pareco_runtime import SlimmableRuntime

BACKENDS = ("torch", "onnxruntime", "executorch")


def rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runtimes, memory, first = {}, {}, {}
    for b in BACKENDS:
        before = rss_mb()
        t0 = time.perf_counter()
        runtimes[b] = SlimmableRuntime.load(args.manifest, backend=b, threads=args.threads, preload=True)
        first[b] = time.perf_counter() - t0
        memory[b] = rss_mb() - before
    points = runtimes["torch"].points
    for batch in (1, 8):
        x = torch.randn(batch, *runtimes["torch"].input_size)
        times: dict[tuple[str, str], list[float]] = {(b, p.id): [] for b in BACKENDS for p in points}
        for _ in range(args.runs):
            for p in points:
                for b, rt in runtimes.items():
                    rt.switch(p)
                    t0 = time.perf_counter()
                    rt(x)
                    times[(b, p.id)].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(
            f"batch {batch}, {args.threads} thread(s), {args.runs} interleaved rounds: median ms (ratio to torch)"
        )
        for b in BACKENDS:
            ratios = [med[(b, p.id)] / med[("torch", p.id)] for p in points]
            cells = " ".join(f"{p.id} {med[(b, p.id)]:.3f} ({r:.2f}x)" for p, r in zip(points, ratios))
            print(f"  {b:12s} median ratio {statistics.median(ratios):.2f}x  {cells}")
    for b, rt in runtimes.items():
        switches = []
        for k in range(2000):
            p = points[k % len(points)]
            t0 = time.perf_counter()
            rt.switch(p)
            switches.append(time.perf_counter() - t0)
        switches.sort()
        print(
            f"{b:12s} switch median {statistics.median(switches) * 1e6:.1f} us, p99 "
            f"{switches[int(0.99 * len(switches))] * 1e6:.1f} us; load with every program "
            f"{first[b]:.2f} s; memory added at load {memory[b]:.1f} MB"
        )


if __name__ == "__main__":
    main()
