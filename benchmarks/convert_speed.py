"""make_slimmable figures: conversion time, full-width forward vs the original, cost model, switch time.

Run: ``.venv/bin/python -m benchmarks.convert_speed [--models NAME,...] [--cost-model NAME,...]`` (a few
minutes on 2 CPU cores; ``timm:NAME`` for timm's models, e.g. ``timm:vit_tiny_patch16_224``). Forward
times are interleaved in one process (the converted model and the original module, one call each per
round) and given as ratios; the cost model is timed against slicing + torch's flop counter.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from bench.timing import interleaved
from benchmarks.convert_coverage import model_by_name
from benchmarks.foundation import cost_model_rates
from pareco_runtime import make_slimmable

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "mnasnet1_0",
    "regnet_y_400mf",
]


def convert(name: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    original = model_by_name(name)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = make_slimmable(original, torch.randn(1, 3, size, size))
    return original, slim.eval(), time.perf_counter() - t0


def forward_ratio(original: torch.nn.Module, slim: torch.nn.Module, size: int, batch: int, runs: int) -> str:
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        t = interleaved({"slim": lambda: slim(x), "original": lambda: original(x)}, warmup=3, runs=runs)
    return f"{t['slim'].median / t['original'].median:.3f}"


def cost_model(slim) -> str:
    analytic, counted = cost_model_rates(slim, n=2000, ref=3)
    return f"{analytic:,.0f} configs/s ({analytic / counted:,.0f}x slice + flop counter)"


def switch_us(slim) -> str:
    a, b = slim.space.uniform(0.5), slim.space.uniform(1.0)
    ca, cb = slim.space.channels(a), slim.space.channels(b)
    state = {"flip": False}

    def switch() -> None:
        state["flip"] = not state["flip"]
        slim.activate(ca if state["flip"] else cb, a if state["flip"] else b, None)

    t = interleaved({"switch": switch}, warmup=100, runs=2000)["switch"]
    return f"{t.median * 1e6:.1f} us (p99 {t.p99 * 1e6:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cost-model", default="resnet50,efficientnet_b0", help="models whose cost model is timed too"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"input {args.size}x{args.size}, {args.threads} thread(s); forward ratio = slimmable / original "
        f"at full width, medians of {args.runs} interleaved rounds"
    )
    for name in args.models.split(","):
        original, slim, seconds = convert(name, args.size)
        b1 = forward_ratio(original, slim, args.size, 1, args.runs)
        b32 = forward_ratio(original, slim, args.size, 32, max(3, args.runs // 4))
        line = (
            f"{name}: {slim.space.dims} dims, converted in {seconds:.2f} s; forward ratio batch 1 {b1}, "
            f"batch 32 {b32}; switch {switch_us(slim)}"
        )
        if name in args.cost_model.split(","):
            line += f"; cost model {cost_model(slim)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
