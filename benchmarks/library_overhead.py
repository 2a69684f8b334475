"""The library's overhead: a Slim step through :class:`training.Trainer` against plain standalone steps.

Run: ``.venv/bin/python -m benchmarks.library_overhead`` (digits, ResNet20, batch 128; ``--data`` takes
what ``pareco train --data`` takes). One Slim step trains the largest, two random widths and the
smallest (in-place distillation at full weight) through ``Trainer.train_step`` between
``opt.zero_grad()`` and ``opt.step()``, as ``pareco train`` does; the reference trains the same four
configs one at a time as plain PyTorch steps (``set_widths``, forward, cross-entropy, backward,
SGD step, one optimiser per config). All on one batch, interleaved in one process; prints per-step
medians and the ratio Slim / sum of the standalone steps.

Measured (2 threads on the 2-core development machine, beside two training runs, ``--runs 10``): the
library's Slim step 4697 ms against 4653 ms for its four standalone steps, ratio 1.009; with the
machine fully loaded (steps 5-10x slower) 1.020. ``pareco train``'s step before the library: 1.05
(README, Training).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bench.timing import Timing, interleaved
from pareco_runtime.models.base import SlimmableNet
from training import Slim, Trainer
from training.config import TrainConfig
from training.data import load_data
from training.loop import build_for_data


def _sgd(model: SlimmableNet) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)


def library_step(
    model: SlimmableNet, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[Callable[[], None], list]:
    """(a Slim step through the library, the configs it trains): the strategy's generator is rewound
    before each call, so every call trains the same configs."""
    trainer = Trainer(model, Slim(seed=0), total_steps=1, distill_warmup=0)
    start = trainer.state_dict()
    opt = _sgd(model)

    def step() -> None:
        trainer.load_state_dict(start)
        model.train()
        opt.zero_grad(set_to_none=True)
        trainer.train_step(batch)
        opt.step()

    configs = trainer.strategy.step_configs(0, model, batch)
    return step, configs


def standalone_step(
    model: SlimmableNet, alpha: list[float], batch: tuple[torch.Tensor, torch.Tensor]
) -> Callable[[], None]:
    """A plain PyTorch training step of the sub-network ``alpha`` alone, with its own optimiser."""
    opt = _sgd(model)
    x, y = batch

    def step() -> None:
        model.train()
        model.set_widths(alpha)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(
    model: SlimmableNet, batch: tuple[torch.Tensor, torch.Tensor], runs: int
) -> tuple[Timing, list[Timing], list]:
    """(the library's Slim step, each standalone step, the configs), timed interleaved."""
    slim, configs = library_step(model, batch)
    cands = {"slim": slim} | {f"solo{i}": standalone_step(model, a, batch) for i, a in enumerate(configs)}
    t = interleaved(cands, warmup=2, runs=runs)
    return t["slim"], [t[f"solo{i}"] for i in range(len(configs))], configs


def report(description: str) -> tuple[argparse.Namespace, Any, float, list[float]]:
    """Parse the command line, time the steps and print them; (options, data, the Slim step's median,
    each standalone step's median), for a caller that prints more."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    print(
        f"{args.arch} on {data.info.name} {tuple(data.info.input_size)}, batch {args.batch_size}, "
        f"{args.threads} threads"
    )
    for a, t in zip(configs, solo):
        print(f"  standalone step width {a[0]:.3f} ({model.macs(a) / 1e6:.2f} MFLOPs): {t * 1e3:.0f} ms")
    print(
        f"  library Slim step ({len(configs)} configs): {slim * 1e3:.0f} ms; sum of its standalone "
        f"steps {sum(solo) * 1e3:.0f} ms; ratio {slim / sum(solo):.3f}"
    )
    return args, data, slim, solo


if __name__ == "__main__":
    report(__doc__)
