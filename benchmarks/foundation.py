"""Foundation figures: cost-model speed, slimmable vs sliced forward time, config switch time.

Run: ``.venv/bin/python -m benchmarks.foundation`` (about a minute on 2 CPU cores). Every figure is a
ratio against a reference measured in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.timing import interleaved
from pareco_runtime import SlimmableNet, build_model, slice_model


def cost_model_rates(m: SlimmableNet, n: int = 10_000, ref: int = 10) -> tuple[float, float]:
    """Configs/s of ``m.macs`` and of slicing + torch's flop counter, on the same random configs."""
    configs = m.space.sample(torch.Generator().manual_seed(0), n)
    t0 = time.perf_counter()
    for a in configs:
        m.macs(a)
    analytic = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for a in configs[:ref]:
        sub = slice_model(m, a).eval()
        with FlopCounterMode(display=False), torch.no_grad():
            sub(torch.zeros(1, *m.input_size))
    counted = (time.perf_counter() - t0) / ref
    return 1 / analytic, 1 / counted


def cost_model_speed(arch: str) -> None:
    analytic, counted = cost_model_rates(build_model(arch))
    print(
        f"cost model {arch}: {analytic:,.0f} configs/s analytic; slice + torch flop counter "
        f"{counted:,.1f} configs/s; speed-up {analytic / counted:,.0f}x"
    )


def forward_ratio(arch: str, width: float, batch: int, threads: int, runs: int) -> None:
    torch.set_num_threads(threads)
    m = build_model(arch).eval()
    alpha = m.space.uniform(width)
    m.set_widths(alpha)
    sub = slice_model(m, alpha).eval()
    x = torch.randn(batch, *m.input_size)
    with torch.inference_mode():
        t = interleaved({"slimmable": lambda: m(x), "sliced": lambda: sub(x)}, warmup=5, runs=runs)
    ratio = t["slimmable"].median / t["sliced"].median
    print(
        f"forward {arch} width {width} batch {batch} threads {threads}: slimmable "
        f"{t['slimmable'].median * 1e3:.2f} ms, sliced {t['sliced'].median * 1e3:.2f} ms, ratio {ratio:.3f}"
    )


def switch_time(arch: str) -> None:
    m = build_model(arch).eval()
    a, b = m.space.uniform(0.5), m.space.uniform(1.0)
    state = {"flip": False}

    def switch() -> None:
        state["flip"] = not state["flip"]
        m.set_widths(a if state["flip"] else b)

    t = interleaved({"switch": switch, "slice": lambda: slice_model(m, a)}, warmup=5, runs=50, inner=1)
    sw = interleaved({"switch": switch}, warmup=100, runs=2000)["switch"]
    print(
        f"switch {arch}: median {sw.median * 1e6:.1f} us, p99 {sw.p99 * 1e6:.1f} us; building a sliced "
        f"model instead {t['slice'].median * 1e3:.2f} ms ({t['slice'].median / sw.median:,.0f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    for arch in ("mobilenet_v2", "resnet20"):
        cost_model_speed(arch)
    for arch in ("resnet20", "mobilenet_v2"):
        switch_time(arch)
    forward_ratio("resnet20", 0.5, 1, 1, args.runs * 10)
    forward_ratio("resnet20", 0.5, 128, 2, args.runs)
    forward_ratio("mobilenet_v2", 0.5, 1, 1, args.runs * 3)
    forward_ratio("mobilenet_v2", 0.5, 128, 2, max(5, args.runs // 6))


if __name__ == "__main__":
    main()
