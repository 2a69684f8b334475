"""Keyword spotting with pareco: a 1-D conv network over MFCC-like frames made slimmable, trained with
Slim and PareCO in a loop of our own, its fronts ranked by top-1, then served by the ``pareco`` commands.

The "audio features" are generated here (no download, no audio library): a clip is 40 coefficients x
98 frames (one second at a 10 ms hop); each keyword is a sequence of four "phonemes", each a bump
over a few neighbouring coefficients, drawn from six shared ones, so keywords differ by the order of
their phonemes; each clip starts at a random frame, speaks at a random rate, in a voice that shifts
every bump by up to three coefficients, and has noise of about the bumps' height added. The
network is Conv1d / BatchNorm1d / ReLU blocks, global average pooling over time and a Linear; the loss
is cross-entropy and in-place distillation is the library's default (KL on the logits)::

    python examples/keyword_spotting.py --out runs/kws                 # Slim and PareCO
    pareco show runs/kws/pareco
    pareco select runs/kws/pareco --budget 1MFLOPs
    PYTHONPATH=. pareco export runs/kws/pareco --budget 1MFLOPs --onnx --executorch \\
        --out runs/kws/export --model examples.keyword_spotting:kws_net
    PYTHONPATH=. pareco bench runs/kws/pareco --backend torch --model examples.keyword_spotting:kws_net

``--model`` names the builder below: a front of a converted model of your own is rebuilt from your
code, which pareco imports only because you name it. docs/task-keyword-spotting.md has the
measurements.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pareco_runtime import make_slimmable
from training import PareCO, Slim, Trainer, build_front

CLASSES = 12
COEFFS, FRAMES = 40, 98
PHONEMES = 4  # per keyword
SEED = 0

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def kws_net(num_classes: int = CLASSES) -> nn.Module:
    """The network, random weights; ``--model examples.keyword_spotting:kws_net`` names this builder."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv1d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(COEFFS, 64, 1),
        *block(64, 96, 2),
        *block(96, 128, 2),
        *block(128, 128, 1),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def make_clips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips ``[n, COEFFS, FRAMES]`` of the ``CLASSES`` keywords, and their labels."""
    orders = list(itertools.permutations(range(6), PHONEMES))  # words: orders of 4 of the 6 phonemes
    pick = torch.randperm(len(orders), generator=torch.Generator().manual_seed(1234))[:CLASSES]
    words = torch.tensor([orders[i] for i in pick])
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    rate = torch.randint(10, 20, (n, 1), generator=g)  # frames per phoneme: the speaking rate
    start = (torch.rand(n, 1, generator=g) * (FRAMES - PHONEMES * rate)).long()
    k = torch.div(torch.arange(FRAMES) - start, rate, rounding_mode="floor")  # [n, FRAMES]: phoneme index
    spoken = (k >= 0) & (k < PHONEMES)
    pitch = torch.randint(-3, 4, (n, 1), generator=g)  # the speaker's voice shifts every phoneme
    centre = 5 + 5 * words[labels[:, None], k.clamp(0, PHONEMES - 1)] + pitch  # [n, FRAMES]
    coeff = torch.arange(COEFFS)[None, :, None]
    clips = spoken[:, None] * torch.exp(-((coeff - centre[:, None]) ** 2) / 4)
    return 1.2 * clips + torch.randn(n, COEFFS, FRAMES, generator=g), labels


def batched(x: torch.Tensor, y: torch.Tensor, size: int, seed: int | None = None) -> Batches:
    """``(x, y)`` in batches of ``size``, shuffled with ``seed`` (in order without one)."""
    order = (
        torch.arange(len(y))
        if seed is None
        else torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    )
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, len(y), size)]


def evaluator(batches: Batches) -> Callable[[nn.Module], dict[str, float]]:
    """Top-1 in percent (the front's metric) and mean cross-entropy on ``batches``."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        correct, loss, seen = 0, 0.0, 0
        for x, y in batches:
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += len(y)
        return {"top1": 100 * correct / seen, "loss": loss / seen}

    return evaluate


def train(
    algorithm: str, model: nn.Module, train_set: tuple[torch.Tensor, torch.Tensor], epochs: int, batch: int
) -> Trainer:
    """Train ``model`` with ``algorithm``'s strategy in our own loop (AdamW, cosine schedule)."""
    steps = math.ceil(len(train_set[1]) / batch) * epochs
    strategy = (
        Slim(seed=SEED, num_candidates=20)
        if algorithm == "slim"
        else PareCO(seed=SEED, history_size=20, probe_batch=64)
    )
    trainer = Trainer(model, strategy, total_steps=steps)  # cross-entropy and KL distillation: the defaults
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
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
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--clips", type=int, default=1024, help="generated training clips")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--algorithms", default="slim,pareco")
    args = ap.parse_args()
    train_set = make_clips(args.clips, SEED)
    selection = evaluator(batched(*make_clips(512, SEED + 1), 256))
    val = evaluator(batched(*make_clips(1024, SEED + 2), 256))
    for algorithm in args.algorithms.split(","):
        torch.manual_seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the classifier stays full: the network's output
            model = make_slimmable(
                kws_net(), torch.zeros(1, COEFFS, FRAMES), arch="examples.keyword_spotting:kws_net",
                model_kwargs={"num_classes": CLASSES},
            )  # fmt: skip
        t0 = time.perf_counter()
        trainer = train(algorithm, model, train_set, args.epochs, args.batch_size)
        trained_s = time.perf_counter() - t0
        calib = batched(*train_set, 256)[:2]  # each candidate's BN statistics: two batches
        record = {"algorithm": algorithm, "epochs": args.epochs, "seed": SEED, "wall_time_s": round(trained_s, 3),
                  "extra": trainer.strategy.record()}  # fmt: skip
        t1 = time.perf_counter()
        built = build_front(args.out / algorithm, model, trainer.candidates(probe=calib[0]), calib, val,
                            selection_evaluate=selection, metric="top1", training=record)  # fmt: skip
        top1 = [c.reported["top1"] for c in built.chosen if c.reported]
        print(
            f"{algorithm}: {len(built.chosen)} points, top-1 {min(top1):.1f}-{max(top1):.1f} %, "
            f"{built.chosen[0].macs / 1e6:.2f}-{built.chosen[-1].macs / 1e6:.2f} MFLOPs; trained in "
            f"{trained_s:.0f} s, front built in {time.perf_counter() - t1:.0f} s: {built.manifest}"
        )


if __name__ == "__main__":
    main()
