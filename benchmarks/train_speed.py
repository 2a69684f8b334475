"""Training step cost: Slim's sandwich step against the standalone steps it contains.

Run: ``.venv/bin/python -m benchmarks.train_speed --data ../shared/datasets/cifar10-jpg.tar.gz``
(or ``--data digits``). One Slim step trains the largest, ``M`` random and the smallest width;
the reference is the same configs trained one at a time as Independent steps (fresh optimiser
per config), all on the same batches, interleaved in one process. Prints per-step medians, the
ratio Slim / sum of its standalone steps, and projected epoch times.
"""

from __future__ import annotations

import argparse

import torch

from bench.timing import interleaved
from training.config import TrainConfig
from training.data import load_data
from training.loop import build_for_data, train_step
from training.strategies import Slim


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
    x, y = next(iter(data.train_batches(args.batch_size, 0, 0)))
    slim = Slim(seed=0)
    slim.setup(model, 1)
    configs = slim.step_configs(0, model, x, y)

    def opt() -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)

    slim_opt, solo_opts = opt(), [opt() for _ in configs]
    cands = {"slim": lambda: train_step(model, model, slim_opt, configs, x, y, 1.0, 0.0, False)}
    for i, (a, o) in enumerate(zip(configs, solo_opts)):
        cands[f"solo{i}"] = lambda a=a, o=o: train_step(model, model, o, [a], x, y, 0.0, 0.0, False)
    t = interleaved(cands, warmup=2, runs=args.runs)
    solo = [t[f"solo{i}"].median for i in range(len(configs))]
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
        f"  Slim step ({len(configs)} configs): {t['slim'].median * 1e3:.0f} ms; sum of its standalone steps "
        f"{sum(solo) * 1e3:.0f} ms; ratio {t['slim'].median / sum(solo):.3f}"
    )
    print(
        f"  projected epoch: Independent(full width) {solo[0] * spe:.0f} s, Slim {t['slim'].median * spe:.0f} s "
        f"({t['slim'].median / solo[0]:.2f}x)"
    )


if __name__ == "__main__":
    main()
