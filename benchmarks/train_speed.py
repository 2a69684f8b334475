"""Training step cost: Slim's sandwich step against the standalone steps it contains, and projected epochs.

Run: ``.venv/bin/python -m benchmarks.train_speed --data ../shared/datasets/cifar10-jpg.tar.gz``
(or ``--data digits``). One Slim step trains the largest, ``M`` random and the smallest width, through
the library ``pareco train`` runs (:func:`benchmarks.library_overhead.measure`); the reference is the
same configs trained one at a time as plain steps (fresh optimiser per config), all on the same batch,
interleaved in one process. Prints per-step medians, the ratio Slim / sum of its standalone steps,
and projected epoch times.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.library_overhead import measure
from training.config import TrainConfig
from training.data import load_data
from training.loop import build_for_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data, device="cpu")
    cfg = TrainConfig(arch=args.arch, data=args.data, batch_size=args.batch_size)
    model = build_for_data(cfg, len(data.info.class_names), data.info.input_size)
    batch = next(iter(data.train_batches(args.batch_size, 0, 0)))
    slim_t, solo_t, configs = measure(model, batch, args.runs)
    slim, solo = slim_t.median, [t.median for t in solo_t]
    spe = data.steps_per_epoch(args.batch_size)
    print(
        f"{args.arch} on {data.info.name} {tuple(data.info.input_size)}, batch {args.batch_size}, "
        f"{args.threads} threads, {spe} steps/epoch"
    )
    for i, a in enumerate(configs):
        print(
            f"  standalone step width {a[0]:.3f} ({model.macs(a) / 1e6:.2f} MFLOPs): {solo[i] * 1e3:.0f} ms"
        )
    print(
        f"  Slim step ({len(configs)} configs): {slim * 1e3:.0f} ms; sum of its standalone steps "
        f"{sum(solo) * 1e3:.0f} ms; ratio {slim / sum(solo):.3f}"
    )
    print(
        f"  projected epoch: Independent(full width) {solo[0] * spe:.0f} s, Slim {slim * spe:.0f} s "
        f"({slim / solo[0]:.2f}x)"
    )


if __name__ == "__main__":
    main()
