"""Every CPU runtime pareco exports to, side by side on the same sub-networks: torch eager, ONNX
Runtime, ExecuTorch, LiteRT and OpenVINO, fp32 and int8, as ratios to ExecuTorch.

Run (in an environment with the export, mobile, litert and openvino extras)::

    OMP_NUM_THREADS=1 python -m benchmarks.runtimes_side_by_side [--runs 20] [--out FILE.json]
        [--models resnet20,mobilenet_v2] [--widths 0.5,1.0]

The sub-networks are uniform-width configs of the zoo's slimmable ResNet20 (32 px, 10 classes) and
MobileNetV2 (224 px, 1000 classes), sliced to plain models (latency and parity do not depend on the
weights' training). Each is exported to every format with :func:`export.exporter.export_point`
(its parity check against PyTorch and its export time recorded), at batch 1 and 8 (ExecuTorch and
LiteRT files run one batch: one file per batch; ONNX and OpenVINO files take any), and as int8 at batch 1 (calibrated on random
inputs: latency only). Then, per model and batch, every (point, runtime, precision) is timed
interleaved round by round (:func:`bench.timing.interleaved_warm`), one thread each. Printed per
point: median ms and the ratio to ExecuTorch's, GMAC/s (multiply-adds per image × batch / median),
int8 / fp32 per runtime, export seconds and the largest difference to PyTorch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.timing import interleaved_warm
from export.exporter import export_point
from export.formats import Calibration, get_format, load_runner
from pareco_runtime import build_model
from pareco_runtime.slicing import slice_model

RUNTIMES = ("torch", "onnx", "executorch", "litert", "openvino")
REFERENCE = "executorch"
INT8 = ("onnx", "executorch", "litert", "openvino")
# (model, zoo arch, kwargs, uniform widths): small and large points of each.
MODELS: tuple[tuple[str, str, dict[str, Any], tuple[float, ...]], ...] = (
    ("resnet20", "resnet20", {"num_classes": 10, "input_size": 32}, (0.5, 0.75, 1.0)),
    ("mobilenet_v2", "mobilenet_v2", {"num_classes": 1000, "input_size": 224}, (0.5, 1.0)),
)
BATCHES = (1, 8)


def export_all(
    model: torch.nn.Module, size: tuple[int, ...], folder: Path, tag: str, say: Callable[[str], None]
) -> tuple[dict[tuple[str, str, int], Callable[[], object]], list[dict[str, Any]]]:
    """Every runtime's program of ``model`` at each batch (int8 at batch 1), bound to a random input;
    and one record per exported file (format, precision, batch, seconds, max abs diff)."""
    calls: dict[tuple[str, str, int], Callable[[], object]] = {}
    records = []
    calib = Calibration([torch.randn(8, *size) for _ in range(4)], "4 x 8 random inputs (latency only)")
    for batch in BATCHES:
        x = torch.randn(batch, *size)

        def eager(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        calls[("torch", "fp32", batch)] = eager
        for fmt in RUNTIMES[1:]:
            for precision in ("fp32", "int8") if batch == 1 else ("fp32",):
                if precision == "int8" and fmt not in INT8:
                    continue
                if batch > 1 and get_format(fmt).dynamic_batch:  # its batch-1 file takes any batch
                    first = folder / f"{tag}-b1-fp32{get_format(fmt).ext}"
                    calls[(fmt, precision, batch)] = load_runner(fmt, first, threads=1).bind(x)
                    continue
                path = folder / f"{tag}-b{batch}-{precision}{get_format(fmt).ext}"
                started = time.perf_counter()
                res = export_point(
                    model, size, fmt, path, batch=batch, int8=calib if precision == "int8" else None
                )
                seconds = time.perf_counter() - started
                records.append(
                    {
                        "format": fmt,
                        "precision": precision,
                        "batch": batch,
                        "seconds": round(seconds, 2),
                        "max_abs_diff": res.max_abs_diff,
                    }
                )
                say(f"  {path.name}: {seconds:.1f} s, max abs diff {res.max_abs_diff:.2e}")
                calls[(fmt, precision, batch)] = load_runner(fmt, res.path, threads=1).bind(x)
    return calls, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here.")
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS), help="Which models, comma-separated.")
    ap.add_argument("--widths", default=None, help="Uniform widths to take instead of each model's own.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from export.formats import set_executorch_threads

    set_executorch_threads(1)
    say = print
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pareco-side-by-side-") as scratch:
        for name, arch, kwargs, own in MODELS:
            if name not in args.models.split(","):
                continue
            widths = own if args.widths is None else tuple(float(w) for w in args.widths.split(","))
            net = build_model(arch, **kwargs).eval()
            size = tuple(net.input_size)
            points = {}
            for w in widths:
                alpha = net.space.uniform(w)
                tag = f"{name}-w{w:g}"
                say(f"exporting {tag} ({net.macs(alpha) / 1e6:.1f} MMAC)")
                calls, records = export_all(slice_model(net, alpha).eval(), size, Path(scratch), tag, say)
                points[tag] = (net.macs(alpha), calls, records)
            for batch in BATCHES:
                candidates = {
                    f"{tag}|{fmt}|{precision}": call
                    for tag, (_, calls, _) in points.items()
                    for (fmt, precision, b), call in calls.items()
                    if b == batch
                }
                say(f"timing {len(candidates)} programs of {name} at batch {batch}, interleaved")
                timings = interleaved_warm(candidates, warmup=args.warmup, runs=args.runs)
                for tag, (macs, _, records) in points.items():
                    row = _row(tag, batch, macs, timings, records)
                    results.append(row)
                    _print(row)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


def _row(
    tag: str, batch: int, macs: int, timings: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """One point at one batch: median ms per runtime and precision, ratios, GMAC/s and its exports."""
    ms = {key.split("|", 1)[1]: t.median * 1e3 for key, t in timings.items() if key.startswith(f"{tag}|")}
    ref = ms[f"{REFERENCE}|fp32"]
    return {
        "point": tag,
        "batch": batch,
        "mmac_per_image": macs / 1e6,
        "median_ms": ms,
        "ratio_to_executorch": {k: v / ref for k, v in ms.items()},
        "gmac_per_s": {k: macs * batch / (v * 1e-3) / 1e9 for k, v in ms.items()},
        "int8_over_fp32": {f: ms[f"{f}|int8"] / ms[f"{f}|fp32"] for f in INT8 if f"{f}|int8" in ms},
        "exports": [r for r in records if r["batch"] == batch],
    }


def _print(row: dict[str, Any]) -> None:
    cells = "  ".join(
        f"{k} {row['median_ms'][k]:.3f} ms ({row['ratio_to_executorch'][k]:.2f}x, "
        f"{row['gmac_per_s'][k]:.1f} GMAC/s)"
        for k in row["median_ms"]
    )
    print(f"{row['point']} b{row['batch']}: {cells}")
    if row["int8_over_fp32"]:
        print("   int8/fp32: " + "  ".join(f"{f} {r:.2f}" for f, r in row["int8_over_fp32"].items()))
    exports = "  ".join(
        f"{r['format']}/{r['precision']} {r['seconds']:.1f} s, {r['max_abs_diff']:.1e}"
        for r in row["exports"]
    )
    print(f"   export time, max abs diff: {exports}")


if __name__ == "__main__":
    main()
