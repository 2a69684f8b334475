"""ExecuTorch batch figures: what ``--batch dynamic:MAX`` costs against static ``--batch N`` files, and which
converted torchvision models take a dynamic batch.

Run: ``.venv/bin/python -m benchmarks.executorch_batch`` (about 5 minutes on 2 CPU cores). For ResNet20
(width 0.5, 32x32) and MobileNetV2 (width 0.42, 224x224), random weights, it exports batch 1, batch MAX and
``dynamic:MAX`` files, each checked against PyTorch, and times the dynamic file at batches 1 and MAX
against the static file of that batch, interleaved in one process on one thread (medians, as ratios).
``--convert`` then lowers a ``dynamic:MAX`` file of each torchvision model of ``benchmarks.convert_speed``
(converted with ``make_slimmable``, sliced at width 0.5, 64x64).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.timing import interleaved_warm, steady_malloc
from benchmarks.convert_speed import MODELS, convert
from export.exporter import ExportResult, export_point
from export.formats import ExportError, load_runner, set_executorch_threads
from pareco_runtime import build_model, slice_model

ZOO = {
    "resnet20": (0.5, (3, 32, 32), {"num_classes": 10}),
    "mobilenet_v2": (0.42, (3, 224, 224), {"num_classes": 1000}),
}


def _export(model: nn.Module, size: tuple[int, ...], batch: str, folder: Path) -> tuple[ExportResult, float]:
    t0 = time.perf_counter()
    res = export_point(model, size, "executorch", folder / f"b{batch.replace(':', '')}.pte", batch=batch)
    return res, time.perf_counter() - t0


def zoo_figures(arch: str, high: int, runs: int, folder: Path) -> None:
    """Print export cost and the dynamic file's latency ratio to the static files for one zoo model."""
    width, size, kwargs = ZOO[arch]
    net = build_model(arch, **kwargs).eval()
    sub = slice_model(net, net.space.uniform(width)).eval()
    specs = ("1", str(high), f"dynamic:{high}")
    runners = {}
    for spec in specs:
        res, seconds = _export(sub, size, spec, folder / arch)
        print(
            f"[{arch}] --batch {spec}: export + check {seconds:.1f} s, {res.bytes:,} bytes, max abs diff "
            f"{res.max_abs_diff:.1e}, not delegated: {', '.join(res.details['undelegated_ops']) or 'none'}"
        )
        runners[spec] = load_runner("executorch", res.path, threads=1)
    xs = {1: torch.randn(1, *size), high: torch.randn(high, *size)}
    candidates = {f"{spec}@{b}": runners[spec].bind(xs[b]) for spec, b in ((specs[0], 1), (specs[1], high))}
    candidates |= {f"{specs[2]}@{b}": runners[specs[2]].bind(xs[b]) for b in (1, high)}
    t = interleaved_warm(candidates, warmup=20, runs=runs)
    for b, static in ((1, specs[0]), (high, specs[1])):
        dyn, fixed = t[f"{specs[2]}@{b}"].median * 1e3, t[f"{static}@{b}"].median * 1e3
        print(
            f"[{arch}] batch {b}: dynamic:{high} {dyn:.3f} ms, static {fixed:.3f} ms, ratio {dyn / fixed:.3f}"
        )


def convert_coverage(high: int, folder: Path) -> None:
    """Print, per converted torchvision model, whether a ``dynamic:MAX`` file lowers and checks."""
    for name in MODELS:
        _, slim, _ = convert(name, 64)
        sub = slice_model(slim, slim.space.uniform(0.5)).eval()
        try:
            res, seconds = _export(sub, (3, 64, 64), f"dynamic:{high}", folder / name)
        except ExportError as exc:
            print(f"[{name}] dynamic:{high} refused: {exc}")
            continue
        print(f"[{name}] dynamic:{high}: {seconds:.1f} s, max abs diff {res.max_abs_diff:.1e}")


def main() -> None:
    """Parse the arguments and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=8, help="the dynamic bound, and the static batch compared")
    ap.add_argument("--runs", type=int, default=100, help="timed rounds")
    ap.add_argument("--convert", action="store_true", help="also lower converted torchvision models")
    args = ap.parse_args()
    steady_malloc()
    torch.set_num_threads(1)
    set_executorch_threads(1)  # before any program loads: the pool is process-wide
    with tempfile.TemporaryDirectory(prefix="pareco-etbatch-") as tmp:
        for arch in ZOO:
            zoo_figures(arch, args.max, args.runs, Path(tmp))
        if args.convert:
            convert_coverage(args.max, Path(tmp))


if __name__ == "__main__":
    main()
