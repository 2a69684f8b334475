"""A torchvision ResNet-18 made slimmable and trained with a recipe of your own, not ``pareco train``'s.

``pareco train`` runs one recipe (SGD with Nesterov momentum, warm-up and cosine decay, optional label
smoothing). The library runs any: here AdamW with a linear warm-up into cosine decay, label smoothing,
MixUp or CutMix on every batch (soft targets) and an exponential moving average (EMA) of the
weights, around :class:`training.Trainer` (Slim's or PareCO's sub-networks per batch, with in-place
distillation) and :func:`training.build_front`::

    python examples/classification_recipe.py --out runs/recipe              # synthetic data, a few minutes
    python examples/classification_recipe.py --data ../shared/datasets/cifar10-jpg.tar.gz --epochs 10 --out runs/recipe
    pareco show runs/recipe/slim/model.front.json runs/recipe/pareco/model.front.json
    pareco select runs/recipe/pareco/model.front.json --budget 20MFLOPs

The network is ``torchvision.models.resnet18`` as torchvision builds it, run on 32-px images (37 MMACs
at full width), converted by ``pareco_runtime.make_slimmable``; the manifest names it
``torchvision:resnet18``, so the runtime and every ``pareco`` command rebuild it with no code of ours.
``--data`` takes the specs of ``pareco train --data`` (``synthetic:N:C``, ``digits``, an ImageFolder
tree or archive such as the CIFAR-10 tarball) through ``training.data.load_data``, which holds out a
selection split to choose the front on and augments with pad-crop and flip.

Soft targets: ``F.cross_entropy`` takes MixUp's class probabilities as well as plain labels (the
probe and calibration batches PareCO measures after training are unmixed). In-place distillation is
unaffected: the students match the largest network's logits on the same mixed images, whatever the
targets are. PareCO's BO measures its configs on the (mixed) training batches with this same loss.

EMA: the front is built from the averaged weights, copied into the trained model before PareCO
re-measures its candidates and before BN calibration. BN running statistics are not averaged: those
measured during training come from other weights (and from every width at once), and ``build_front``
recalibrates each front point's statistics with the EMA weights anyway.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms import v2

from pareco_runtime import make_slimmable
from pareco_runtime.manifest import Metric
from pareco_runtime.models.base import SlimmableNet
from training import PareCO, Slim, Trainer, build_front
from training.data import Data, load_data
from training.front_builder import classification_dataset, classification_evaluators, split_record

SEED = 0
LR, WEIGHT_DECAY, WARMUP = 2e-3, 0.05, 0.05  # AdamW; warm-up over 5 % of the steps, then cosine
LABEL_SMOOTHING = 0.1
MIXUP_ALPHA, CUTMIX_ALPHA = 0.2, 1.0
EMA_DECAY = (
    0.999  # reached after ~10,000 steps; (1 + n) / (10 + n) before, so short runs average late weights
)
SELECT_FRACTION = 0.1  # training images held out to choose the front on (pareco train's default)
CALIB_BATCHES, CALIB_BATCH_SIZE, PROBE_BATCH = 4, 128, 64


def slimmable_resnet18(num_classes: int, side: int) -> SlimmableNet:
    """torchvision's ResNet-18 for ``num_classes`` classes, slimmable, sized for ``side``-px images."""
    torch.manual_seed(SEED)
    original = torchvision.models.resnet18(num_classes=num_classes)
    return make_slimmable(
        original,
        torch.zeros(1, 3, side, side),
        arch="torchvision:resnet18",
        model_kwargs={"num_classes": num_classes},
    )


def smoothed_cross_entropy(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy with label smoothing, against labels or MixUp/CutMix class probabilities."""
    return F.cross_entropy(output, batch[1], label_smoothing=LABEL_SMOOTHING)


def ema_decay(averaged: torch.Tensor) -> float:
    """The EMA's decay after ``averaged`` updates: (1 + n) / (10 + n), at most :data:`EMA_DECAY`."""
    n = float(averaged)
    return min(EMA_DECAY, (1 + n) / (10 + n))


def ema_of(model: SlimmableNet) -> AveragedModel:
    """An exponential moving average of ``model``'s weights (its BN buffers are not averaged)."""
    return AveragedModel(model, avg_fn=lambda avg, new, n: avg + (new - avg) * (1 - ema_decay(n)))


def train(
    algorithm: str, data: Data, epochs: int, batch_size: int, candidates: int, history_size: int
) -> tuple[Trainer, AveragedModel]:
    """Train a fresh slimmable ResNet-18 on ``data`` with ``algorithm`` (slim or pareco) and our recipe;
    its trainer and the EMA of its weights."""
    classes = len(data.info.class_names)
    model = slimmable_resnet18(classes, data.info.input_size[-1]).to(data.device)
    steps = data.steps_per_epoch(batch_size) * epochs
    strategy = (
        Slim(seed=SEED, num_candidates=candidates)
        if algorithm == "slim"
        else PareCO(seed=SEED, history_size=history_size, probe_batch=PROBE_BATCH, candidates=candidates)
    )
    trainer = Trainer(model, strategy, smoothed_cross_entropy, total_steps=steps)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    warm = max(1, int(WARMUP * steps))
    schedule = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps - warm)),
        ],
        milestones=[warm],
    )
    mix = v2.RandomChoice(
        [v2.MixUp(alpha=MIXUP_ALPHA, num_classes=classes), v2.CutMix(alpha=CUTMIX_ALPHA, num_classes=classes)]
    )
    ema = ema_of(model)
    for epoch in range(epochs):
        model.train()
        for x, y in data.train_batches(batch_size, epoch, SEED):
            result = trainer.train_step(mix(x, y))
            opt.step()
            opt.zero_grad()
            schedule.step()
            ema.update_parameters(model)
        print(
            f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {result.losses[0]:.3f}", flush=True
        )
    return trainer, ema


@torch.no_grad()
def use_ema_weights(model: SlimmableNet, ema: AveragedModel) -> None:
    """Copy the EMA's weights into ``model`` (its BN buffers stay: every front point is recalibrated)."""
    for p, avg in zip(model.parameters(), ema.module.parameters(), strict=True):
        p.copy_(avg)


def write_front(out: Path, trainer: Trainer, ema: AveragedModel, data: Data, record: dict) -> Path:
    """Build the front of the EMA weights into ``out``, ranked by top-1 on ``data``'s selection split and
    reported on its validation split, as ``pareco train`` does; the manifest's path."""
    use_ema_weights(trainer.model, ema)
    probe = next(iter(data.calib_batches(PROBE_BATCH, 1, SEED)))  # PareCO re-measures H on it
    evaluate, selection_evaluate = classification_evaluators(data)
    built = build_front(
        out,
        trainer.model,
        trainer.candidates(probe=probe),
        lambda: data.calib_batches(CALIB_BATCH_SIZE, CALIB_BATCHES, SEED),
        evaluate,
        selection_evaluate=selection_evaluate,
        metric=Metric(),  # top-1, recorded as pareco train records it
        dataset=classification_dataset(data.info, split_record(data.info, SELECT_FRACTION, SEED)),
        training=record,
    )
    return built.manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/ and pareco/")
    ap.add_argument("--data", default="synthetic:512:4", help="a pareco train --data spec")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--algorithms", default="slim,pareco")
    ap.add_argument("--candidates", type=int, default=8, help="configs evaluated for each front")
    ap.add_argument("--history-size", type=int, default=40, help="PareCO's |H|")
    args = ap.parse_args(argv)
    data = load_data(args.data, seed=SEED, select_fraction=SELECT_FRACTION)
    for algorithm in args.algorithms.split(","):
        t0 = time.perf_counter()
        trainer, ema = train(
            algorithm, data, args.epochs, args.batch_size, args.candidates, args.history_size
        )
        extra = trainer.strategy.record()
        record = {
            "algorithm": algorithm,
            "epochs": args.epochs,
            "seed": SEED,
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "history_size": extra.get("history_size"),
            "extra": {**extra, "recipe": "AdamW, warm-up + cosine, label smoothing, MixUp/CutMix, EMA"},
        }
        manifest = write_front(args.out / algorithm, trainer, ema, data, record)
        print(f"{algorithm}: front written to {manifest}")
    print(f"next: pareco show {args.out}/*/model.front.json")
    print(f"      pareco select {manifest} --budget 20MFLOPs")


if __name__ == "__main__":
    main()
