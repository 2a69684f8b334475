"""Does rounding channel counts to multiples of 8 (or 4) make slimmed MobileNets faster per MAC?

Run::

    .venv/bin/python -m benchmarks.channel_divisor [--arch mobilenet_v2] [--image-size 32] [--widths 6]

For each divisor (none, 4, 8) it builds the slimmable network (random weights: timing does not
depend on them), slices it at the same uniform widths, exports each sub-network to ONNX and
ExecuTorch (fp32, batch 1) and times all of them, torch eager included, interleaved in one process
at one thread (``bench.timing.interleaved_warm``). It prints per backend and width the MFLOPs and
median ms of each divisor, and per backend the median over widths of each divisor's ms per MFLOP
as a ratio to no divisor's: below 1 means rounding makes the kernels faster per unit of work, so at
equal MACs (the accuracy proxy a front is chosen on) the rounded front is faster.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from bench.timing import interleaved_warm, steady_malloc, torch_callable, torch_threads
from export.exporter import export_point
from export.formats import SERVED, load_runner, set_executorch_threads
from pareco_runtime.models import build_model
from pareco_runtime.slicing import slice_model

DIVISORS = (None, 4, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--widths", type=int, default=6)
    ap.add_argument("--runs", type=int, default=150)
    args = ap.parse_args()
    set_executorch_threads(1)
    steady_malloc()
    x = torch.randn(1, 3, args.image_size, args.image_size)
    candidates, mflops = {}, {}
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        for d in DIVISORS:
            net = build_model(
                args.arch, num_classes=args.classes, input_size=args.image_size, divisor=d
            ).eval()
            low = net.space.low
            for i in range(args.widths):
                w = round(low + (1.0 - low) * i / (args.widths - 1), 3)
                alpha = [w] * len(net.space.names)
                model = slice_model(net, alpha).eval()
                mflops[(d, w)] = net.macs(alpha) / 1e6
                candidates[(d, w, "torch")] = torch_callable(model, x)
                for backend, fmt in SERVED.items():
                    path = Path(tmp) / f"d{d}-w{w}{fmt.ext}"
                    export_point(model, x.shape[1:], fmt.name, path)
                    candidates[(d, w, backend)] = load_runner(fmt.name, path, threads=1).bind(x)
        named = {f"{d}|{w}|{b}": fn for (d, w, b), fn in candidates.items()}
        timings = interleaved_warm(named, warmup=30, runs=args.runs)
    widths = sorted({w for _, w in mflops})
    for backend in ("torch", *SERVED):
        print(
            f"\n{backend}: width, then MFLOPs / median ms per divisor ({', '.join(str(d) for d in DIVISORS)})"
        )
        per_mac: dict[int | None, list[float]] = {d: [] for d in DIVISORS}
        for w in widths:
            cells = []
            for d in DIVISORS:
                ms = timings[f"{d}|{w}|{backend}"].median * 1e3
                per_mac[d].append(ms / mflops[(d, w)])
                cells.append(f"{mflops[(d, w)]:6.2f} / {ms:6.3f}")
            print(f"  {w:5.3f}  " + "   ".join(cells))
        for d in DIVISORS[1:]:
            ratios = [a / b for a, b in zip(per_mac[d], per_mac[None])]
            print(f"  divisor {d}: ms per MFLOP / no divisor's: median {statistics.median(ratios):.3f} "
                  f"(range {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
