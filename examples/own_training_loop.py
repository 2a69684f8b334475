"""Train a slimmable network with Slim or PareCO from your own training loop, then build its front.

The loop is an ordinary PyTorch loop over data of its own: AdamW, a cosine schedule, label smoothing
and gradient accumulation over two batches; the library (:class:`training.Trainer`) only runs each
batch's sub-networks. :func:`training.build_front` then builds the front on the loop's own figures:
it recalibrates BN per candidate on our calibration batches, scores each with our ``evaluate`` on a
held-out selection split (``selection_evaluate``), keeps the points non-dominated by (MACs, our
metric), scores those on the validation split and writes ``model.safetensors`` + ``model.front.json``,
which ``pareco show``, ``select`` and ``export`` take::

    python examples/own_training_loop.py --out runs/own-loop            # Slim and PareCO, ~1 minute
    pareco show runs/own-loop/pareco/model.front.json

The data are generated here (class prototypes plus noise, no download); any SlimmableNet works, from
the zoo as here or converted from your own module with ``pareco_runtime.make_slimmable``. The front is
ranked by ``--metric`` (``accuracy``, higher is better, or ``nll``, lower is better), both of which
``evaluate`` returns; a segmentation or detection loop returns mIoU or mAP the same way.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pareco_runtime import build_model
from training import PareCO, Slim, Trainer, build_front

ACCUMULATE = 2  # batches per optimiser step
SEED = 0
CLASSES = 4
SIDE = 16

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images of ``CLASSES`` fixed prototypes, and their labels."""
    prototypes = torch.randn(CLASSES, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return prototypes[labels] + 1.5 * torch.randn(n, 3, SIDE, SIDE, generator=g), labels


def batched(x: torch.Tensor, y: torch.Tensor, size: int, seed: int | None = None) -> Batches:
    """``(x, y)`` in batches of ``size``, shuffled with ``seed`` (in order without one)."""
    order = (
        torch.arange(len(y))
        if seed is None
        else torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    )
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, len(y), size)]


def evaluator(batches: Batches) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Our metric on ``batches``: accuracy (a fraction) and mean negative log-likelihood."""

    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        correct, nll, seen = 0, 0.0, 0
        for x, y in batches:
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            nll += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += len(y)
        return {"accuracy": correct / seen, "nll": nll / seen}

    return evaluate


def label_smoothed(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The loss the loop minimises: cross-entropy with label smoothing 0.1."""
    return F.cross_entropy(output, batch[1], label_smoothing=0.1)


def train(
    algorithm: str, train_set: tuple[torch.Tensor, torch.Tensor], epochs: int, batch_size: int
) -> Trainer:
    """Train a fresh ResNet20 with ``algorithm``'s strategy in a loop of our own; its trainer."""
    torch.manual_seed(SEED)
    model = build_model("resnet20", num_classes=CLASSES, input_size=SIDE)
    steps = math.ceil(len(train_set[1]) / batch_size) * epochs
    strategy = Slim(seed=SEED) if algorithm == "slim" else PareCO(seed=SEED, history_size=20, probe_batch=32)
    trainer = Trainer(model, strategy, label_smoothed, total_steps=steps)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s * ACCUMULATE / steps))
    )
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(batched(*train_set, batch_size, seed=SEED + epoch)):
            result = trainer.train_step(batch, backward=lambda loss: (loss / ACCUMULATE).backward())
            if (i + 1) % ACCUMULATE == 0:
                opt.step()
                opt.zero_grad()
                schedule.step()
        largest = result.losses[0].item()
        print(
            f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {largest:.3f}, {strategy.progress()}"
        )
    return trainer


def write_front(
    out: Path, algorithm: str, trainer: Trainer, splits: dict[str, Batches], metric: str, record: dict
) -> Path:
    """Build the front of ``trainer``'s model on our own figures, ranked by ``metric``, into ``out``;
    returns the manifest path."""
    calib = splits["train"][:4]  # BN statistics of each candidate: four training batches, unaugmented
    # PareCO re-measures H on a probe batch with the final weights (TwoStage would search on it).
    configs = trainer.candidates(probe=calib[0])
    built = build_front(
        out,
        trainer.model,
        configs,
        calib,
        evaluator(splits["val"]),
        selection_evaluate=evaluator(splits["selection"]),
        metric=metric,
        higher_is_better=metric == "accuracy",
        training=record,
    )
    return built.manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/ and pareco/")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=512, help="generated training images")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--algorithms", default="slim,pareco")
    ap.add_argument(
        "--metric", choices=("accuracy", "nll"), default="accuracy", help="what the front is ranked by"
    )
    args = ap.parse_args()
    train_set = make_images(args.images, SEED)
    splits = {
        "train": batched(*train_set, args.batch_size),
        "selection": batched(*make_images(128, SEED + 1), 128),
        "val": batched(*make_images(256, SEED + 2), 128),
    }
    for algorithm in args.algorithms.split(","):
        t0 = time.perf_counter()
        trainer = train(algorithm, train_set, args.epochs, args.batch_size)
        extra = trainer.strategy.record()
        record = {
            "algorithm": algorithm,
            "epochs": args.epochs,
            "seed": SEED,
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "history_size": extra.get("history_size"),
            "extra": extra,
        }
        manifest = write_front(args.out / algorithm, algorithm, trainer, splits, args.metric, record)
        print(f"{algorithm}: front written to {manifest}")


if __name__ == "__main__":
    main()
