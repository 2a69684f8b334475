"""Two trained fronts on one device's measured latency: latency-aware training against MAC training.

Run (after training both, e.g. ``pareco train ... --algorithm pareco --out A`` and the same with
``--cost latency@TABLE --out B``)::

    .venv/bin/python -m benchmarks.latency_cost A/model.front.json B/model.front.json --table TABLE

Both fronts' points are timed on the table's backend, threads and batch, the two fronts alternating
for ``--rounds`` rounds in one process (a point's figure is the median of its rounds' medians, so
both see the same load), and it prints hypervolume in (top-1 on the test split, measured ms) from
one reference point (chance top-1, 1.1 x the slowest point of either), top-1 at three matched
latencies and the table's prediction error on the points.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.run import run_bench
from bench.timing import TimingSettings
from benchmarks.specialize_front import best_under, hypervolume
from pareco_runtime.latency_table import LatencyLUT
from pareco_runtime.runtime import SlimmableRuntime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fronts", type=Path, nargs=2, help="the MAC-trained front, then the latency-trained one")
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    lut = LatencyLUT.load(args.table)
    runtimes = [SlimmableRuntime.load(m) for m in args.fronts]
    times: list[dict[str, list[float]]] = [{} for _ in runtimes]
    for _ in range(args.rounds):
        for rt, seen in zip(runtimes, times):
            report = run_bench(
                rt,
                rt.points,
                [lut.backend],
                TimingSettings(threads=lut.threads, batch=lut.batch, runs=args.runs),
            )
            for m in report.measurements:
                seen.setdefault(m.point, []).append(m.median_ms)
    fronts = [
        sorted(((p.top1 or 0.0, statistics.median(seen[p.id])) for p in rt.points), key=lambda v: v[1])
        for rt, seen in zip(runtimes, times)
    ]
    chance = 100.0 / len(runtimes[0].front.dataset.class_names or [0] * 10)
    slowest = max(ms for front in fronts for _, ms in front)
    print(f"{lut.backend} t{lut.threads} b{lut.batch}, {args.rounds} rounds of {args.runs} runs per front")
    for name, front in zip(("MAC-trained", "latency-trained"), fronts):
        print(
            f"{name:16s} HV {hypervolume(front, chance, slowest):9.3f}  points "
            + " ".join(f"({t:.2f}%, {m:.3f} ms)" for t, m in front)
        )
    lat = [m for _, m in fronts[0]]
    for q in (0.25, 0.5, 0.75):
        target = lat[0] + q * (lat[-1] - lat[0])
        print(
            f"top-1 at <= {target:.3f} ms: MAC-trained {best_under(fronts[0], target)}  "
            f"latency-trained {best_under(fronts[1], target)}"
        )
    errors = sorted(
        abs(lut.predict_ms(p.channels) - statistics.median(seen[p.id])) / statistics.median(seen[p.id]) * 100
        for rt, seen in zip(runtimes, times)
        for p in rt.points
    )
    within = sum(e <= 10 for e in errors) / len(errors) * 100
    print(
        f"table error on these {len(errors)} points: median {statistics.median(errors):.1f} %, "
        f"{within:.0f} % within 10 %"
    )


if __name__ == "__main__":
    main()
