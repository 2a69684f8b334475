"""A small ViT on CIFAR-10 made slimmable (FFN hidden units and whole attention heads), trained in a loop of
our own, and three fronts from it: Slim's, MatFormer's Mix'n'Match and PareCO's.

The network is timm's ``VisionTransformer`` as ``vit_tiny_patch16_224`` builds it (192-wide tokens, 3
heads of 64), on 32-px images in 4-px patches (64 tokens and a class token), with fewer blocks;
``pareco_runtime.make_slimmable`` makes each block's heads and FFN width a width dimension (the token
width stays fixed). Training: AdamW with a cosine schedule, Slim's sandwich rule over every dimension
(the largest, the smallest and two random uniform widths per batch, in-place distillation), through
:class:`training.Trainer`. From those weights: the Slim front (uniform widths spread over MACs) and
the Mix'n'Match front (:mod:`training.mixnmatch`: FFN widths from ``--granularities``, non-decreasing
through depth, heads whole); with ``pareco`` in ``--algorithms`` a second network is trained with
PareCO (per-layer widths and heads searched by BO) for its own front. Every front is ranked by top-1
on held-out training images and reports validation top-1::

    python examples/vit_cifar.py --out runs/vit                                  # CIFAR-10, see --data
    python examples/vit_cifar.py --out runs/vit --data synthetic:512:4 --epochs 1 --depth 2   # minutes
    pareco show runs/vit/slim runs/vit/mixnmatch runs/vit/pareco
    pareco select runs/vit/mixnmatch --budget 40MFLOPs
    PYTHONPATH=. pareco export runs/vit/mixnmatch --budget 40MFLOPs --onnx --executorch \\
        --out runs/vit/export --model examples.vit_cifar:vit_net
    PYTHONPATH=. pareco bench runs/vit/mixnmatch --backend torch --model examples.vit_cifar:vit_net

``--data`` takes ``pareco train``'s data specs; by default the CIFAR-10 JPEG archive at
``$PARECO_CIFAR10``, else ``../shared/datasets/cifar10-jpg.tar.gz`` beside this checkout.
``synthetic:N:C`` makes N seeded 32-px images of C classes in memory (no download): the tests use it.
``--model`` names the builder below: the runtime rebuilds a front of your own architecture from your
code only when you name it. docs/task-transformers.md explains the fronts.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from pareco_runtime import make_slimmable
from pareco_runtime.models.base import SlimmableNet
from training import PareCO, Slim, Trainer, build_front
from training.data import Data, load_data
from training.front_builder import BuiltFront, classification_dataset, classification_evaluators, split_record
from training.mixnmatch import mixnmatch_front

SEED = 0
LR, WEIGHT_DECAY = 1e-3, 0.05  # AdamW, cosine decay to zero
LOW = 0.125  # the space's lowest width: MatFormer's smallest granularity, one head of three
SELECT_FRACTION = 0.1  # training images held out to choose the front on
CALIB_BATCHES, CALIB_BATCH_SIZE, PROBE_BATCH = 4, 128, 64
CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg.tar.gz"


def default_data() -> str:
    """The CIFAR-10 JPEG archive: ``$PARECO_CIFAR10``, else :data:`CIFAR10` beside this checkout."""
    return os.environ.get("PARECO_CIFAR10", str(CIFAR10))


def vit_net(num_classes: int = 10, depth: int = 6, dim: int = 192, heads: int = 3) -> nn.Module:
    """timm's ViT-Tiny layout for 32-px images (4-px patches), ``depth`` blocks, random weights;
    ``--model examples.vit_cifar:vit_net`` names this builder."""
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=num_classes,
        depth=depth, embed_dim=dim, num_heads=heads,
    )  # fmt: skip


def slimmable_vit(num_classes: int, depth: int, dim: int, heads: int) -> SlimmableNet:
    """:func:`vit_net` made slimmable: per block its heads and FFN width, down to :data:`LOW`."""
    torch.manual_seed(SEED)
    kwargs = {"num_classes": num_classes, "depth": depth, "dim": dim, "heads": heads}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the token width (residual stream) stays fixed, as documented
        return make_slimmable(
            vit_net(**kwargs), torch.zeros(1, 3, 32, 32), low=LOW, arch="examples.vit_cifar:vit_net",
            model_kwargs=kwargs,
        )  # fmt: skip


def train(
    algorithm: str, model: SlimmableNet, data: Data, epochs: int, batch_size: int, args: Any
) -> Trainer:
    """Train ``model`` with Slim or PareCO in our own loop (AdamW, cosine schedule, cross-entropy)."""
    steps = data.steps_per_epoch(batch_size) * epochs
    strategy = (
        Slim(seed=SEED, num_candidates=args.candidates)
        if algorithm == "slim"
        else PareCO(
            seed=SEED, history_size=args.history_size, probe_batch=PROBE_BATCH, candidates=args.candidates
        )
    )
    trainer = Trainer(model, strategy, total_steps=steps)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(epochs):
        model.train()
        for batch in data.train_batches(batch_size, epoch, SEED):
            result = trainer.train_step(batch)
            opt.step()
            opt.zero_grad()
            schedule.step()
        print(
            f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {result.losses[0]:.3f}", flush=True
        )
    return trainer


def front_kwargs(data: Data) -> dict[str, Any]:
    """What every front of this example is built with: top-1 on the held-out and validation splits, the
    calibration batches, the dataset record."""
    evaluate, selection_evaluate = classification_evaluators(data)
    return {
        "calib_batches": lambda: data.calib_batches(CALIB_BATCH_SIZE, CALIB_BATCHES, SEED),
        "evaluate": evaluate,
        "selection_evaluate": selection_evaluate,
        "metric": "top1",
        "dataset": classification_dataset(data.info, split_record(data.info, SELECT_FRACTION, SEED)),
    }


def summary(name: str, built: BuiltFront) -> str:
    """One line: the front's points, their top-1 and MFLOPs, and where it is."""
    top1 = [c.reported["top1"] for c in built.chosen if c.reported]
    return (
        f"{name}: {len(built.chosen)} points of {built.evaluated} candidates, top-1 {min(top1):.1f}-"
        f"{max(top1):.1f} %, {built.chosen[0].macs / 1e6:.2f}-{built.chosen[-1].macs / 1e6:.2f} MFLOPs: "
        f"{built.manifest}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/, mixnmatch/ and pareco/")
    ap.add_argument("--data", default=default_data(), help="a pareco train --data spec")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--depth", type=int, default=6, help="transformer blocks")
    ap.add_argument("--dim", type=int, default=192, help="token width")
    ap.add_argument("--heads", type=int, default=3, help="attention heads (dim / heads each)")
    ap.add_argument("--algorithms", default="slim,pareco", help="slim (and its Mix'n'Match front), pareco")
    ap.add_argument("--granularities", default="0.125,0.25,0.5,1", help="Mix'n'Match's FFN widths")
    ap.add_argument(
        "--candidates", type=int, default=20, help="configs evaluated for Slim's and PareCO's fronts"
    )
    ap.add_argument("--history-size", type=int, default=100, help="PareCO's |H|")
    args = ap.parse_args(argv)
    data = load_data(args.data, seed=SEED, select_fraction=SELECT_FRACTION)
    classes = len(data.info.class_names)
    shared = front_kwargs(data)
    for algorithm in args.algorithms.split(","):
        model = slimmable_vit(classes, args.depth, args.dim, args.heads).to(data.device)
        t0 = time.perf_counter()
        trainer = train(algorithm, model, data, args.epochs, args.batch_size, args)
        extra = trainer.strategy.record()
        record = {
            "algorithm": algorithm, "epochs": args.epochs, "seed": SEED,
            "wall_time_s": round(time.perf_counter() - t0, 3), "history_size": extra.get("history_size"),
            "extra": {**extra, "recipe": "AdamW, cosine"},
        }  # fmt: skip
        probe = next(iter(data.calib_batches(PROBE_BATCH, 1, SEED)))  # PareCO re-measures H on it
        built = build_front(
            args.out / algorithm, model, trainer.candidates(probe=probe), training=record, **shared
        )
        print(summary(algorithm, built), flush=True)
        if algorithm == "slim":  # MatFormer's sub-models, from the same weights
            grains = [float(g) for g in args.granularities.split(",")]
            built = mixnmatch_front(
                args.out / "mixnmatch", model, training=record, granularities=grains, **shared
            )
            print(summary("mixnmatch", built), flush=True)


if __name__ == "__main__":
    main()
