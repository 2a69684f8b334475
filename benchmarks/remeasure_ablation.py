"""Does re-measuring only part of H hurt PareCO's front? Full re-measurement against subsets.

Run: ``.venv/bin/python -m benchmarks.remeasure_ablation`` (about 10 minutes on 2 quiet CPU cores; digits,
no download). Trains PareCO once per (``--remeasure`` setting, seed) with everything else equal, then
prints, per setting: the hypervolume of the evaluated front (mean ± sd over seeds, the same reference
point as ``benchmarks.reproduce_cifar``), the mean top-1 at three MAC levels, the seconds spent
re-measuring H and the whole run's wall time. ``--remeasure 0`` is the paper's rule (all of H at
every BO step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def run_one(args: argparse.Namespace, remeasure: int, seed: int, out: Path) -> dict[str, float | list]:
    """Train PareCO with ``remeasure`` and ``seed``; its front, re-measure seconds and wall time."""
    from pareco_runtime import Front
    from training.config import TrainConfig
    from training.loop import train

    cfg = TrainConfig(
        arch="resnet20",
        data=args.data,
        algorithm="pareco",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
        image_size=args.image_size,
        candidates=args.candidates,
        calib_batches=4,
        history_size=args.history_size,
        probe_batch=args.probe_batch,
        remeasure=remeasure,
    )
    front = Front.load(train(cfg, out, show_progress=False, cache_dir=args.cache_dir))
    t = front.training
    return {
        "points": [(p.mflops, p.top1) for p in front.points],
        "measure_s": t.extra["bo_measure_s"],
        "wall_s": t.wall_time_s,
        "full_mflops": front.architecture.build().macs() / 1e6,
    }


def main() -> None:
    from benchmarks.reproduce_cifar import hypervolume, top1_at, upper_front

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--history-size", type=int, default=100)
    ap.add_argument("--probe-batch", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=12)
    ap.add_argument("--remeasure", type=int, nargs="+", default=[0, 24])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10, help="for the chance level of the hypervolume")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    results: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.remeasure:
            for seed in range(args.seeds):
                r = run_one(args, k, seed, Path(tmp) / f"k{k}-s{seed}")
                results.setdefault(k, []).append(r)
                print(
                    f"remeasure {k:4d} seed {seed}: hypervolume "
                    f"{hypervolume(upper_front(r['points']), r['full_mflops'], 100 / args.classes):.2f}, "
                    f"re-measure {r['measure_s']:.1f} s, wall {r['wall_s']:.0f} s",
                    flush=True,
                )
    full = results[args.remeasure[0]][0]["full_mflops"]
    levels = [full * f for f in (0.15, 0.4, 1.0)]
    print(
        f"\nPareCO on {args.data}, {args.epochs} epochs, |H| target {args.history_size}, probe {args.probe_batch}, "
        f"{args.seeds} seeds (remeasure 0 = all of H)"
    )
    print(
        "| remeasure | hypervolume | "
        + " | ".join(f"top-1 @ {v:.2f} MFLOPs" for v in levels)
        + " | re-measure s | wall s |"
    )
    print("|---" * (len(levels) + 4) + "|")
    for k, rs in results.items():
        hv = [hypervolume(upper_front(r["points"]), full, 100 / args.classes) for r in rs]
        tops = [statistics.mean(top1_at(upper_front(r["points"]), v) or 0.0 for r in rs) for v in levels]
        sd = statistics.stdev(hv) if len(hv) > 1 else 0.0
        print(
            f"| {k} | {statistics.mean(hv):.2f} ± {sd:.2f} | "
            + " | ".join(f"{t:.2f}" for t in tops)
            + f" | {statistics.mean(r['measure_s'] for r in rs):.1f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |"
        )


if __name__ == "__main__":
    main()
