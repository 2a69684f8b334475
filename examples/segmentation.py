"""Semantic segmentation with pareco: torchvision's LRASPP-MobileNetV3-Large made slimmable, trained with
Slim and PareCO in a loop of our own, its fronts ranked by mIoU, then served by the ``pareco`` commands.

The data are generated here (no download): 64x64 noise images with squares, discs and diamonds of
random colours drawn on them, so a pixel's class is its shape's (0 is background); the pixels on a
shape's outline are labelled 255 and ignored, as VOC does. The loss is pixel cross-entropy; in-place
distillation (the largest sub-network teaching the others) is on, as pixel-wise KL of our own: the
library's default matches plain logits and LRASPP returns ``{"out": logits}``. Each front is ranked by
mIoU (torchmetrics, higher is better) and also records pixel accuracy::

    python examples/segmentation.py --out runs/seg                     # Slim and PareCO
    pareco show runs/seg/pareco
    pareco select runs/seg/pareco --budget 12MFLOPs
    PYTHONPATH=. pareco export runs/seg/pareco --budget 12MFLOPs --onnx --executorch \\
        --out runs/seg/export --model examples.segmentation:lraspp
    PYTHONPATH=. pareco bench runs/seg/pareco --backend torch --model examples.segmentation:lraspp

``--model`` names the builder below: a front of a converted model of your own is rebuilt from your
code, which pareco imports only because you name it. docs/task-segmentation.md has the measurements.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from pareco_runtime import make_slimmable
from training import PareCO, Slim, Trainer, build_front

CLASSES = 4  # background, square, disc, diamond
SIDE = 64
IGNORE = 255
SEED = 0

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def lraspp(num_classes: int = CLASSES) -> torch.nn.Module:
    """The network, random weights; ``--model examples.segmentation:lraspp`` names this builder."""
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


def make_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 3, SIDE, SIDE]`` of two shapes each on noise, and their masks ``[n, SIDE, SIDE]``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    images = torch.randn(n, 3, SIDE, SIDE, generator=g)
    masks = torch.zeros(n, SIDE, SIDE, dtype=torch.long)
    for _ in range(2):  # the second shape is drawn over the first
        cls = torch.randint(1, CLASSES, (n, 1, 1), generator=g)
        cy, cx = torch.randint(10, SIDE - 10, (2, n, 1, 1), generator=g)
        r = torch.randint(7, 16, (n, 1, 1), generator=g)
        dy, dx = (yy - cy).abs(), (xx - cx).abs()
        inside = torch.where(
            cls == 1, torch.maximum(dy, dx) <= r, torch.where(cls == 2, dy**2 + dx**2 <= r**2, dy + dx <= r)
        )
        colour = (
            2 * torch.rand(n, 3, 1, 1, generator=g) - 1 + 0.3 * torch.randn(n, 3, SIDE, SIDE, generator=g)
        )
        images = torch.where(inside[:, None], colour, images)
        masks = torch.where(inside, cls, masks)
    m = masks[:, None].float()
    outline = (F.max_pool2d(m, 3, 1, 1) != -F.max_pool2d(-m, 3, 1, 1))[:, 0]
    return images, masks.masked_fill(outline, IGNORE)


def batched(x: torch.Tensor, y: torch.Tensor, size: int, seed: int | None = None) -> Batches:
    """``(x, y)`` in batches of ``size``, shuffled with ``seed`` (in order without one)."""
    order = (
        torch.arange(len(y))
        if seed is None
        else torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    )
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, len(y), size)]


def pixel_ce(output: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Our loss: cross-entropy over the labelled pixels."""
    return F.cross_entropy(output["out"], batch[1], ignore_index=IGNORE)


def pixel_kl(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """In-place distillation: KL(teacher || student) of each pixel's class distribution, averaged."""
    s, t = F.log_softmax(student["out"].float(), 1), F.log_softmax(teacher["out"].float(), 1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(1).mean()


def evaluator(batches: Batches) -> Callable[[torch.nn.Module], dict[str, float]]:
    """mIoU over the classes (the front's metric) and pixel accuracy, outlines ignored, on ``batches``."""

    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        miou = MulticlassJaccardIndex(CLASSES, ignore_index=IGNORE)
        acc = MulticlassAccuracy(CLASSES, average="micro", ignore_index=IGNORE)
        for x, y in batches:
            pred = model(x)["out"].argmax(1)
            miou.update(pred, y)
            acc.update(pred, y)
        return {"miou": float(miou.compute()), "pixel_acc": float(acc.compute())}

    return evaluate


def train(
    algorithm: str,
    model: torch.nn.Module,
    train_set: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    batch: int,
) -> Trainer:
    """Train ``model`` with ``algorithm``'s strategy in our own loop (AdamW, cosine schedule)."""
    steps = math.ceil(len(train_set[1]) / batch) * epochs
    strategy = (
        Slim(seed=SEED, num_candidates=12)
        if algorithm == "slim"
        else PareCO(seed=SEED, history_size=16, probe_batch=16)
    )
    trainer = Trainer(model, strategy, pixel_ce, total_steps=steps, distill=pixel_kl)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(epochs):
        model.train()
        for b in batched(*train_set, batch, seed=SEED + epoch):
            result = trainer.train_step(b)
            opt.step()
            opt.zero_grad()
            schedule.step()
        print(f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {result.losses[0].item():.3f}")
    return trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/ and pareco/")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=192, help="generated training images")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--algorithms", default="slim,pareco")
    args = ap.parse_args()
    train_set = make_shapes(args.images, SEED)
    selection = evaluator(batched(*make_shapes(64, SEED + 1), 32))
    val = evaluator(batched(*make_shapes(128, SEED + 2), 32))
    for algorithm in args.algorithms.split(","):
        torch.manual_seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the two classifiers stay full: the network's outputs
            model = make_slimmable(
                lraspp(), torch.zeros(1, 3, SIDE, SIDE), arch="examples.segmentation:lraspp",
                model_kwargs={"num_classes": CLASSES},
            )  # fmt: skip
        t0 = time.perf_counter()
        trainer = train(algorithm, model, train_set, args.epochs, args.batch_size)
        trained_s = time.perf_counter() - t0
        calib = batched(*train_set, args.batch_size)[:2]  # each candidate's BN statistics: two batches
        record = {"algorithm": algorithm, "epochs": args.epochs, "seed": SEED, "wall_time_s": round(trained_s, 3),
                  "extra": trainer.strategy.record()}  # fmt: skip
        t1 = time.perf_counter()
        built = build_front(args.out / algorithm, model, trainer.candidates(probe=calib[0]), calib, val,
                            selection_evaluate=selection, metric="miou", training=record)  # fmt: skip
        mious = [c.reported["miou"] for c in built.chosen if c.reported]
        print(
            f"{algorithm}: {len(built.chosen)} points, mIoU {min(mious):.3f}-{max(mious):.3f}, "
            f"{built.chosen[0].macs / 1e6:.1f}-{built.chosen[-1].macs / 1e6:.1f} MFLOPs; trained in "
            f"{trained_s:.0f} s, front built in {time.perf_counter() - t1:.0f} s: {built.manifest}"
        )


if __name__ == "__main__":
    main()
