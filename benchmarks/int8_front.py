"""int8 variants of a front against its fp32 points: latency, top-1 drop, file size, hypervolume.

Run::

    .venv/bin/python -m benchmarks.int8_front MANIFEST --calib DATA [--runs 200] [--calib-batches 16]

It runs the user's commands: ``pareco export MANIFEST --all --onnx --executorch --int8 --calib DATA
--force`` (timed; forced so that every point is reported, the drop included) and ``pareco bench
MANIFEST --backend executorch --backend onnxruntime --int8 --update`` at batch 1, one thread (fp32
and int8 programs of every point interleaved in one process). Then per point and backend: int8 /
fp32 median latency, the top-1 drop (both measured on the same images by the export), and the int8
file's size over the fp32 file's (``export.json``); per backend, hypervolume in (top-1, measured
latency) of the fp32 points against the fp32 points plus their int8 variants (reference: chance
top-1, 1.1 × the slowest program), and the best top-1 at three matched latencies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.specialize_front import best_under, hypervolume
from export.formats import served_backend
from export.index import read_index
from pareco_runtime.manifest import Front

# The int8 formats, in the order the report lists them, with the backend each runs on.
BACKENDS = {served_backend(fmt): fmt for fmt in ("executorch", "onnx")}


def _pareco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pareco_cli.main", *args], check=True, capture_output=True, text=True
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--calib-batches", default="16")
    ap.add_argument("--runs", default="200")
    args = ap.parse_args()
    manifest = args.manifest
    t0 = time.perf_counter()
    _pareco("export", str(manifest), "--all", "--onnx", "--executorch", "--int8", "--calib", args.calib,
            "--calib-batches", args.calib_batches, "--force")  # fmt: skip
    export_s = time.perf_counter() - t0
    bench = json.loads(
        _pareco("bench", str(manifest), "--backend", "executorch", "--backend", "onnxruntime", "--int8",
                "--update", "--threads", "1", "--batch", "1", "--runs", args.runs, "--json").stdout
    )  # fmt: skip
    front = Front.load(manifest)
    records = read_index(manifest.parent / "export")
    size = {(e["point"], e["format"], e.get("precision", "fp32")): e["bytes"] for e in records}
    rows = {(m["point"], m["backend"], m["precision"]): m for m in bench["measurements"]}
    chance = 100.0 / len(front.dataset.class_names) if front.dataset.class_names else 0.0
    print(f"{manifest}: {len(front.points)} points; int8 export of all points {export_s:.0f} s")
    print("point  backend      fp32 ms  int8 ms  int8/fp32  fp32 top-1  int8 top-1  drop  size int8/fp32")
    for backend, fmt in BACKENDS.items():
        ratios, drops, sizes, fp32_pts, all_pts = [], [], [], [], []
        for p in front.points:
            v = p.variant("int8", backend)
            f, q = rows.get((p.id, backend, "fp32")), rows.get((p.id, backend, "int8"))
            if v is None or f is None or q is None:
                continue
            ratio, sz = q["median_ms"] / f["median_ms"], size[(p.id, fmt, "int8")] / size[(p.id, fmt, "fp32")]
            ratios.append(ratio)
            drops.append(v.drop)
            sizes.append(sz)
            fp32_pts.append((v.fp32_top1, f["median_ms"]))
            all_pts += [(v.fp32_top1, f["median_ms"]), (v.top1, q["median_ms"])]
            print(f"{p.id:6} {backend:11} {f['median_ms']:8.3f} {q['median_ms']:8.3f} {ratio:10.2f} "
                  f"{v.fp32_top1:11.2f} {v.top1:11.2f} {v.drop:5.2f} {sz:15.2f}")  # fmt: skip
        if not ratios:
            continue
        slowest = max(ms for _, ms in all_pts)
        hv_fp32, hv_all = hypervolume(fp32_pts, chance, slowest), hypervolume(all_pts, chance, slowest)
        print(f"{backend}: int8/fp32 latency median {statistics.median(ratios):.2f} (range "
              f"{min(ratios):.2f}-{max(ratios):.2f}); top-1 drop median {statistics.median(drops):.2f}, "
              f"max {max(drops):.2f} points; size ratio median {statistics.median(sizes):.2f}")  # fmt: skip
        print(f"{backend}: hypervolume (top-1 x ms) fp32 {hv_fp32:.3f}, with int8 {hv_all:.3f} "
              f"({100 * (hv_all / hv_fp32 - 1):+.1f} %)")  # fmt: skip
        times = sorted(ms for _, ms in fp32_pts)
        for q in (0.25, 0.5, 0.75):
            ms = times[round(q * (len(times) - 1))]
            print(f"{backend}: best top-1 at <= {ms:.3f} ms: fp32 {best_under(fp32_pts, ms):.2f}, "
                  f"with int8 {best_under(all_pts, ms):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
