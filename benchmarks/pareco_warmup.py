"""Do PareCO's first proposals spread over the cost range? The warm-up of H, measured on a short run.

Run: ``.venv/bin/python -m benchmarks.pareco_warmup`` (about 2 minutes on 2 CPU cores; digits, no
download). Trains ResNet20 with PareCO for ``--epochs`` with a BO step at every step, once per
``--warmup-configs`` setting, and prints for the first ``--first`` BO proposals (after the random
warm-up ones): how many are the
smallest config (within 1 % of its cost), the deciles of their cost (fraction of the full model's
MACs), how many of 10 equal bins of the cost range they reach, and how many bisections used every
step (the target cost was not reached).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def proposals(
    args: argparse.Namespace, warmup_configs: int, out: Path
) -> tuple[list[float], list[int], float]:
    """The costs and bisection steps of the first ``args.first`` proposals of one run, and the smallest cost."""
    from training.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from training.config import TrainConfig
    from training.loop import build_for_data, train

    cfg = TrainConfig(
        arch="resnet20",
        data="digits",
        algorithm="pareco",
        epochs=args.epochs,
        batch_size=64,
        seed=args.seed,
        candidates=4,
        calib_batches=1,
        history_size=100_000,
        probe_batch=64,
        warmup_configs=warmup_configs,
    )
    train(cfg, out, show_progress=False)
    state = load_checkpoint(out / CHECKPOINT_NAME)["strategy"]
    history = state["history"].tolist()
    steps = state["bisection_steps"].tolist()
    model = build_for_data(cfg, 10, (3, 8, 8))
    full = model.macs(model.space.uniform(1.0))
    proposed = history[len(history) - len(steps) :]
    costs = [model.macs(a) / full for a, k in zip(proposed, steps) if k > 0]
    steps = [k for k in steps if k > 0]
    smallest = model.macs(model.space.smallest()) / full
    return costs[: args.first], steps[: args.first], smallest


def main() -> None:
    """Print the spread of the first proposals per warm-up setting."""
    import statistics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=44)
    p.add_argument("--settings", default="0,32", help="--warmup-configs values to compare")
    args = p.parse_args()
    from training.mobo import MAX_BISECTION_STEPS

    print(
        f"first {args.first} BO proposals (after the random ones) of PareCO, ResNet20 on digits, {args.epochs} epochs, a BO step at every step"
    )
    print("warmup_configs  at_smallest  cost_deciles(10,50,90)  bins_reached  bisections_at_max")
    for setting in (int(v) for v in args.settings.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            costs, steps, smallest = proposals(args, setting, Path(tmp))
        at_small = sum(c <= smallest * 1.01 for c in costs)
        deciles = statistics.quantiles(costs, n=10)
        bins = {min(9, int(10 * (c - smallest) / (1 - smallest))) for c in costs}
        print(
            f"{setting:>14}  {at_small:>5}/{len(costs):<5}  "
            f"{deciles[0]:.3f} {deciles[4]:.3f} {deciles[8]:.3f}          "
            f"{len(bins):>2}/10         {sum(s == MAX_BISECTION_STEPS for s in steps):>3}/{len(steps)}"
        )


if __name__ == "__main__":
    main()
