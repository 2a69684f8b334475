"""Does starting from the user's own weights pay? Slim from a trained full-width checkpoint vs from random init.

Run (about 25 minutes on 2 CPU cores; re-running resumes finished steps):

    python -m benchmarks.init_gain --data ../shared/datasets/cifar10-jpg.tar.gz --out runs/init_gain

1. trains a plain full-width ResNet20 (``--algorithm independent --width 1``) for ``--pretrain-epochs``:
   the checkpoint a user already has; its weights are saved as a state_dict;
2. trains Slim for ``--epochs`` from that state_dict (``--init``) and, same seed and schedule, from
   random initialisation;
3. prints both fronts' top-1 at matched MACs (interpolated along each front).
"""

from __future__ import annotations

import argparse
from pathlib import Path

MATCH = (0.15, 0.35, 0.6, 1.0)  # fractions of the full model's MACs


def _run(cfg, out: Path, cache: str | None) -> Path:
    from training.loop import train

    manifest = out / "model.front.json"
    if manifest.exists():
        return manifest
    return train(cfg, out, resume=(out / "run.json").exists(), cache_dir=cache)


def main() -> None:
    import torch

    from benchmarks.reproduce_cifar import top1_at, upper_front
    from pareco_runtime import Front
    from pareco_runtime.weights_file import load_weights
    from training.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/init_gain"))
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    common = {"arch": "resnet20", "data": args.data, "seed": 0, "candidates": 12}
    pre = _run(
        TrainConfig(algorithm="independent", width=1.0, epochs=args.pretrain_epochs, **common),
        args.out / "pretrain",
        args.cache_dir,
    )
    start = args.out / "pretrained.pt"
    if not start.exists():
        torch.save(load_weights(Front.load(pre).weights_path).state, start)
    runs = {
        "from checkpoint": _run(
            TrainConfig(algorithm="slim", epochs=args.epochs, init=str(start), **common),
            args.out / "slim-init",
            args.cache_dir,
        ),
        "from random init": _run(
            TrainConfig(algorithm="slim", epochs=args.epochs, **common),
            args.out / "slim-random",
            args.cache_dir,
        ),
    }
    pre_top1 = Front.load(pre).points[0].top1
    fronts = {k: upper_front([(p.mflops, p.top1) for p in Front.load(v).points]) for k, v in runs.items()}
    full = max(m for f in fronts.values() for m, _ in f)
    print(
        f"ResNet20 on {args.data}: full-width checkpoint after {args.pretrain_epochs} epochs: top-1 {pre_top1:.2f} %"
    )
    print(f"Slim, {args.epochs} epochs, same seed and schedule; top-1 % at MFLOPs:")
    print("start".ljust(18) + "".join(f"{f * full:>10.2f}" for f in MATCH))
    for name, front in fronts.items():
        cells = [top1_at(front, f * full) for f in MATCH]
        print(name.ljust(18) + "".join(f"{'-' if c is None else f'{c:.2f}':>10}" for c in cells))


if __name__ == "__main__":
    main()
