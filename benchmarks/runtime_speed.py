"""Runtime figures: switch time, active forward vs standalone twin, memory of one runtime vs a zoo.

Run: ``.venv/bin/python -m benchmarks.runtime_speed`` (a few minutes on 2 CPU cores). Fronts are
built in memory (uniform widths spread over MACs, BN calibrated on random images): the figures
depend on shapes, not on trained values. Every figure is a ratio against a reference measured in
the same process, interleaved.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from bench.timing import interleaved
from pareco_runtime import SlimmableRuntime, build_model
from pareco_runtime.manifest import DatasetSpec, FrontPoint, TrainingRecord, write_front
from training.calibrate import calibrate_bn
from training.strategies import widths_spread_over_macs


def make_runtime(arch: str, n_points: int, calib: list[torch.Tensor]) -> SlimmableRuntime:
    """A runtime over ``n_points`` uniform widths of ``arch`` with BN statistics from ``calib``, loaded from
    files written to a temporary folder (as an app loads a trained front)."""
    torch.manual_seed(0)
    model = build_model(arch)
    points, stats = [], {}
    for i, w in enumerate(widths_spread_over_macs(model, n_points)):
        a = model.space.uniform(w)
        pid = f"p{i:02d}"
        stats[pid] = dict(zip(model.bn_names, calibrate_bn(model, a, calib)))
        points.append(
            FrontPoint(pid, a, model.channels(a), model.macs(a) / 1e6, model.params(a), top1=50.0 + i)
        )
    c = model.input_size[0]
    dataset = DatasetSpec(name="random", input_size=tuple(model.input_size), mean=[0.0] * c, std=[1.0] * c)
    training = TrainingRecord(algorithm="independent", epochs=0, seed=0, wall_time_s=0.0)
    with tempfile.TemporaryDirectory(prefix="pareco-runtime-speed-") as folder:
        return SlimmableRuntime.load(write_front(folder, model, points, stats, dataset, training))


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def cache_bytes(model: torch.nn.Module) -> int:
    """Bytes of the contiguous copies the slimmable layers cache for the active width."""
    from pareco_runtime.ops import _Slim

    total = 0
    for m in model.modules():
        if isinstance(m, _Slim) and m._cache[1]:
            base = m.weight.untyped_storage().data_ptr()
            total += sum(
                t.numel() * t.element_size()
                for t in m._cache[1]
                if t is not None and t.untyped_storage().data_ptr() != base
            )
    return total


def bench_arch(arch: str, n_points: int, runs: int, threads: int) -> None:
    torch.set_num_threads(threads)
    size = build_model(arch).input_size
    calib = [torch.randn(8, *size) for _ in range(2)]
    rt = make_runtime(arch, n_points, calib)
    pts = rt.points
    state = {"i": 0}

    def switch() -> None:
        state["i"] += 1
        rt.switch(pts[state["i"] % len(pts)])

    sw = interleaved({"switch": switch}, warmup=100, runs=2000)["switch"]
    mid = pts[len(pts) // 2]
    other = rt.model
    heavy = interleaved(
        {
            "standalone": lambda: rt.standalone(mid),
            "recalibrate": lambda: calibrate_bn(other, mid.alpha, calib),
        },
        warmup=2,
        runs=max(5, runs // 4),
    )
    print(
        f"[{arch}] switch median {sw.median * 1e6:.1f} us, p99 {sw.p99 * 1e6:.1f} us | building a standalone "
        f"model {heavy['standalone'].median * 1e3:.2f} ms ({heavy['standalone'].median / sw.median:,.0f}x) | "
        f"recalibrating BN at switch time (2 batches of 8) {heavy['recalibrate'].median * 1e3:.1f} ms "
        f"({heavy['recalibrate'].median / sw.median:,.0f}x)"
    )
    for p in (pts[0], mid, pts[-1]):
        rt.switch(p)
        twin = rt.standalone(p)
        x = torch.randn(1, *size)
        with torch.inference_mode():
            t = interleaved(
                {"runtime": lambda x=x: rt(x), "twin": lambda x=x, twin=twin: twin(x)}, warmup=10, runs=runs
            )
        print(
            f"[{arch}] forward batch 1, {threads} thread(s), {p.id} ({p.mflops:.1f} MFLOPs): runtime "
            f"{t['runtime'].median * 1e3:.3f} ms, standalone twin {t['twin'].median * 1e3:.3f} ms, ratio "
            f"{t['runtime'].median / t['twin'].median:.3f}"
        )
    rt.switch(pts[0])  # the smallest point makes the most layers non-contiguous: the largest cache
    with torch.inference_mode():
        rt(torch.randn(1, *size))
    held = tensor_bytes(rt.model) + sum(m.numel() * 4 + v.numel() * 4 for p in pts for m, v in rt.bn_stats(p))
    cached = cache_bytes(rt.model)
    zoo = sum(tensor_bytes(rt.standalone(p)) for p in pts)
    print(
        f"[{arch}] memory: one runtime holding {len(pts)} points {held / 2**20:.2f} MiB + {cached / 2**20:.2f} MiB "
        f"cached for the active point vs a zoo of {len(pts)} standalone models {zoo / 2**20:.2f} MiB "
        f"(ratio {(held + cached) / zoo:.2f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for arch in ("resnet20", "mobilenet_v2"):
        bench_arch(
            arch, args.points, args.runs if arch == "resnet20" else max(20, args.runs // 5), args.threads
        )


if __name__ == "__main__":
    main()
