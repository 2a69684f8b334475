"""A specialized front against the MAC-chosen front of the same weights, on measured latency.

Run (after ``pareco bench lut MANIFEST --profile P --backend B --threads 1``)::

    .venv/bin/python -m benchmarks.specialize_front MANIFEST --profile P --data DATA [--evals 40]

It runs ``pareco specialize`` (timed), then times the points of both fronts in one interleaved
``pareco bench`` run on the table's backend (both fronts' points put into one temporary front served
by the same weight file, so the two are measured under the same load), and prints hypervolume in
(top-1 on the test split, measured latency) with the reference point (chance top-1, 1.1 × the
slowest point), top-1 at three matched latencies, and the table's prediction error on the points.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume

from bench.run import run_bench
from bench.timing import TimingSettings
from pareco_runtime.latency_table import LatencyLUT, lut_path
from pareco_runtime.manifest import FrontPoint, save_derived_front
from pareco_runtime.runtime import SlimmableRuntime


def hypervolume(points: list[tuple[float, float]], chance: float, slowest: float) -> float:
    """Area dominated by (top-1, latency) points, top-1 maximised and latency minimised, from the
    reference (chance top-1, 1.1 × slowest latency); in top-1 points × ms."""
    y = torch.tensor([[t, -ms] for t, ms in points], dtype=torch.float64)
    return float(Hypervolume(torch.tensor([chance, -1.1 * slowest], dtype=torch.float64)).compute(y))


def best_under(points: list[tuple[float, float]], ms: float) -> float | None:
    """The best top-1 among points at most ``ms`` milliseconds."""
    ok = [t for t, m in points if m <= ms]
    return max(ok) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--evals", type=int, default=40)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--reuse", action="store_true", help="time the specialized front an earlier run wrote")
    args = ap.parse_args()
    lut = LatencyLUT.load(lut_path(args.manifest, args.profile))
    spec = args.manifest.with_name(
        f"{args.manifest.name.removesuffix('.front.json')}.{args.profile}.front.json"
    )
    t0 = time.perf_counter()
    reused = args.reuse and spec.is_file()
    if not reused:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pareco_cli.main",
                "specialize",
                str(args.manifest),
                "--profile",
                args.profile,
                "--data",
                args.data,
                "--evals",
                str(args.evals),
                "--points",
                str(args.points),
                "--no-measure",
                "--force",
                "--json",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    specialize_s = time.perf_counter() - t0
    base, special = SlimmableRuntime.load(args.manifest), SlimmableRuntime.load(spec)
    both: list[FrontPoint] = []
    stats = {}
    for tag, rt in (("m", base), ("s", special)):
        for p in rt.points:
            # The combined front declares no profiles, so it keeps no figure measured on one.
            q = dataclasses.replace(
                p, id=f"{tag}-{p.id}", latency_ms={}, latency_predicted_ms={}, variants=[]
            )
            both.append(q)
            stats[q.id] = dict(zip(rt.model.bn_names, rt.bn_stats(p)))
    # The combined front must sit beside the weight file (it is served by it); removed after.
    combined = args.manifest.with_name(f".both-{int(time.time())}.front.json")
    stem = combined.name.removesuffix(".front.json")
    try:
        save_derived_front(base.front, combined, both, stats, [], {})
        rt = SlimmableRuntime.load(combined)
        report = run_bench(
            rt, rt.points, [lut.backend], TimingSettings(threads=lut.threads, batch=lut.batch, runs=args.runs)
        )
    finally:
        for f in [combined, *combined.parent.glob(f"{stem}.*.bn.safetensors")]:
            f.unlink(missing_ok=True)
    ms = {m.point: m.median_ms for m in report.measurements}
    chance = 100.0 / len(base.front.dataset.class_names or [0] * 10)
    fronts = {
        tag: [(p.top1 or 0.0, ms[p.id]) for p in both if p.id.startswith(tag + "-")] for tag in ("m", "s")
    }
    slowest = max(ms.values())
    print(
        f"specialize: {args.evals} configs, {'reused' if reused else f'{specialize_s:.0f} s'}; {lut.backend} t{lut.threads} b{lut.batch}"
    )
    for tag, name in (("m", "MAC front"), ("s", "specialized")):
        pts = sorted(fronts[tag], key=lambda v: v[1])
        print(
            f"{name:12s} HV {hypervolume(pts, chance, slowest):9.3f}  points "
            + " ".join(f"({t:.2f}%, {m:.3f} ms)" for t, m in pts)
        )
    lat = sorted(m for _, m in fronts["m"])
    for q in (0.25, 0.5, 0.75):
        target = lat[0] + q * (lat[-1] - lat[0])
        print(
            f"top-1 at <= {target:.3f} ms: MAC {best_under(fronts['m'], target)}  specialized {best_under(fronts['s'], target)}"
        )
    errors = sorted(abs(lut.predict_ms(p.channels) - ms[p.id]) / ms[p.id] * 100 for p in both)
    within = sum(e <= 10 for e in errors) / len(errors) * 100
    print(
        f"table error on these {len(errors)} points: median {errors[len(errors) // 2]:.1f} %, {within:.0f} % within 10 %"
    )


if __name__ == "__main__":
    main()
