"""Train a slimmable network with Slim or PareCO from your own training loop, then build its front.

The loop is an ordinary PyTorch loop: AdamW, a cosine schedule, label smoothing and gradient
accumulation over two batches; the library
(:class:`training.Trainer`) only runs each batch's sub-networks. The front is then built as
``pareco train`` builds it (BN calibration, evaluation on held-out images, non-dominated sort) and
written as ``model.safetensors`` + ``model.front.json``, which ``pareco show``, ``select`` and
``export`` take::

    python examples/own_training_loop.py --out runs/own-loop            # Slim and PareCO, ~1 minute
    pareco show runs/own-loop/pareco/model.front.json

The data are generated (``synthetic:N:C``, no download); any SlimmableNet works, from the zoo as here
or converted from your own module with ``pareco_runtime.make_slimmable``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pareco_runtime import build_model
from training import PareCO, Slim, Trainer
from training.data import load_data
from training.front_builder import (
    evaluate_candidates,
    evaluate_chosen,
    pareto_candidates,
    split_record,
    write_outputs,
)

ACCUMULATE = 2  # batches per optimiser step
SEED = 0


def label_smoothed(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The loss the loop minimises: cross-entropy with label smoothing 0.1."""
    return F.cross_entropy(output, batch[1], label_smoothing=0.1)


def train(algorithm: str, data, epochs: int, batch_size: int) -> Trainer:
    """Train a fresh ResNet20 with ``algorithm``'s strategy in a loop of our own; its trainer."""
    torch.manual_seed(SEED)
    model = build_model(
        "resnet20", num_classes=len(data.info.class_names), input_size=data.info.input_size[-1]
    )
    steps = data.steps_per_epoch(batch_size) * epochs
    strategy = Slim(seed=SEED) if algorithm == "slim" else PareCO(seed=SEED, history_size=20, probe_batch=32)
    trainer = Trainer(model, strategy, label_smoothed, total_steps=steps)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s * ACCUMULATE / steps))
    )
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(data.train_batches(batch_size, epoch, SEED)):
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


def write_front(out: Path, algorithm: str, trainer: Trainer, data, epochs: int, seconds: float) -> Path:
    """Calibrate and evaluate the strategy's candidates, keep the non-dominated ones and write the weight
    file and manifest into ``out``; returns the manifest path."""
    model = trainer.model
    # PareCO re-measures H on it with the final weights (TwoStage would search on it).
    probe = next(iter(data.calib_batches(32, 1, SEED)))
    configs = trainer.candidates(probe=probe)
    cands = evaluate_candidates(model, configs, data, calib_batches=4, calib_batch_size=64, seed=SEED)
    front = pareto_candidates(cands)
    evaluate_chosen(model, front, data)
    extra = trainer.strategy.record()
    record = {
        "algorithm": algorithm,
        "epochs": epochs,
        "seed": SEED,
        "wall_time_s": round(seconds, 3),
        "history_size": extra.get("history_size"),
        "extra": extra,
    }
    _, manifest = write_outputs(out, model, front, data.info, record, split_record(data.info, 0.1, SEED))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/ and pareco/")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=512, help="generated images (synthetic data)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--algorithms", default="slim,pareco")
    args = ap.parse_args()
    data = load_data(f"synthetic:{args.images}:4", image_size=16, seed=SEED, select_fraction=0.1)
    for algorithm in args.algorithms.split(","):
        t0 = time.perf_counter()
        trainer = train(algorithm, data, args.epochs, args.batch_size)
        seconds = time.perf_counter() - t0
        manifest = write_front(args.out / algorithm, algorithm, trainer, data, args.epochs, seconds)
        print(f"{algorithm}: front written to {manifest}")


if __name__ == "__main__":
    main()
