"""A byte-level decoder language model made slimmable (attention heads and SwiGLU FFN widths), trained on a
folder of text files in a loop of our own, its front ranked by loss (lower is better).

The network is plain torch, Llama-style: a byte embedding (256 ids), blocks of RMSNorm, causal
self-attention with separate q/k/v projections (heads split by ``-1``, so they follow the width) and a
SwiGLU FFN, a final RMSNorm and an untied head over the 256 bytes. ``pareco_runtime.make_slimmable``
makes each block's heads and FFN width a width dimension (the token width stays fixed). Training:
AdamW with a cosine schedule, Slim's sandwich rule (or PareCO's per-layer search) through
:class:`training.Trainer`, next-byte cross-entropy and in-place distillation over the byte
distribution at every position. The front: each candidate scored by its mean next-byte loss on
held-out text (``metric="loss"``, ``higher_is_better=False``), bits per byte beside it. After Slim,
the Mix'n'Match front from the same weights (:mod:`training.mixnmatch`: FFN widths from
``--granularities``, heads at full width), MatFormer's baseline::

    python examples/byte_lm.py --text my_texts/ --out runs/lm                  # *.txt under my_texts/
    pareco show runs/lm/slim runs/lm/mixnmatch
    pareco select runs/lm/slim --budget 100Kparams

The files are read as bytes (any encoding), concatenated and cut into windows of ``--context`` + 1
bytes; the last tenth of the bytes is held out for the front's figures. The manifest records int64
token ids of ``--context`` positions (``dataset.input_dtype``), so the front is served like any
other, with the builder named::

    pareco export runs/lm/slim --model examples.byte_lm:byte_lm --all --onnx --executorch
    pareco bench runs/lm/slim --model examples.byte_lm:byte_lm --backend onnxruntime --backend executorch

and in Python ``SlimmableRuntime.load("runs/lm/slim/model.front.json", model=byte_lm)`` takes
``(N, context)`` int64 ids. docs/task-transformers.md explains the front.
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
from torch import nn

from pareco_runtime import make_slimmable
from pareco_runtime.manifest import DatasetSpec
from pareco_runtime.models.base import SlimmableNet
from training import PareCO, Slim, Trainer, build_front
from training.batch_loss import soft_target_distill
from training.front_builder import BuiltFront
from training.mixnmatch import mixnmatch_front

SEED = 0
VOCAB = 256  # bytes
LR, WEIGHT_DECAY = 3e-3, 0.01
LOW = 0.125
Batches = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    """Separate q/k/v projections; the head count is written ``-1``, so it follows the active width."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn, self.ffn = CausalSelfAttention(dim, heads), SwiGLU(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ByteLM(nn.Module):
    """Byte ids ``[N, T]`` in, next-byte logits ``[N, T, 256]`` out; a learned position embedding."""

    def __init__(self, dim: int = 128, heads: int = 4, layers: int = 4, context: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.zeros(1, context, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(layers)))
        self.norm, self.head = nn.RMSNorm(dim), nn.Linear(dim, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(ids) + self.pos)))


def byte_lm(dim: int = 128, heads: int = 4, layers: int = 4, context: int = 128) -> nn.Module:
    """The network, random weights (the manifest names this builder)."""
    return ByteLM(dim, heads, layers, context)


def slimmable_lm(dim: int, heads: int, layers: int, context: int) -> SlimmableNet:
    """:func:`byte_lm` made slimmable: per block its heads and SwiGLU width, down to :data:`LOW`."""
    torch.manual_seed(SEED)
    kwargs = {"dim": dim, "heads": heads, "layers": layers, "context": context}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the token width (residual stream) stays fixed, as documented
        return make_slimmable(
            byte_lm(**kwargs), torch.zeros(1, context, dtype=torch.long), low=LOW,
            arch="examples.byte_lm:byte_lm", model_kwargs=kwargs,
        )  # fmt: skip


def read_text(folder: Path) -> torch.Tensor:
    """Every ``*.txt`` under ``folder`` as one tensor of byte ids, files in name order."""
    files = sorted(folder.rglob("*.txt"))
    if not files:
        raise ValueError(f"{folder}: no *.txt files; give a folder of text files")
    return torch.frombuffer(bytearray(b"\n".join(f.read_bytes() for f in files)), dtype=torch.uint8).long()


def windows(data: torch.Tensor, context: int, size: int, seed: int | None = None) -> Batches:
    """Non-overlapping windows of ``context`` + 1 bytes as (input, next bytes), in batches of ``size``,
    shuffled with ``seed`` (in order without one)."""
    n = (len(data) - 1) // context
    if n < 1:
        raise ValueError(f"text: {len(data)} bytes, fewer than one window of {context + 1}; give more text")
    x = data[: n * context].view(n, context)
    y = data[1 : n * context + 1].view(n, context)
    order = (
        torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    )
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, n, size)]


def next_byte_loss(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the next byte at every position."""
    return F.cross_entropy(output.transpose(1, 2), batch[1])


def byte_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """In-place distillation over the byte distribution at every position (vocabulary moved to axis 1)."""
    return soft_target_distill(student.transpose(1, 2), teacher.transpose(1, 2))


def evaluator(batches: Batches) -> Callable[[nn.Module], dict[str, float]]:
    """Mean next-byte loss (the front's metric, nats) and bits per byte on ``batches``."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        total, seen = 0.0, 0
        for batch in batches:
            total += float(next_byte_loss(model(batch[0]), batch)) * batch[1].numel()
            seen += batch[1].numel()
        return {"loss": total / seen, "bits_per_byte": total / seen / math.log(2)}

    return evaluate


def train(
    algorithm: str, model: SlimmableNet, batches: Callable[[int], Batches], epochs: int, history: int
) -> Trainer:
    """Train ``model`` with Slim or PareCO in our own loop (AdamW, cosine schedule)."""
    steps = len(batches(0)) * epochs
    strategy = (
        Slim(seed=SEED, num_candidates=20) if algorithm == "slim" else PareCO(seed=SEED, history_size=history)
    )
    trainer = Trainer(model, strategy, loss=next_byte_loss, distill=byte_distill, total_steps=steps)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(epochs):
        model.train()
        for batch in batches(epoch):
            result = trainer.train_step(batch)
            opt.step()
            opt.zero_grad()
            schedule.step()
        print(
            f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {result.losses[0]:.3f}", flush=True
        )
    return trainer


def dataset(context: int) -> DatasetSpec:
    """The manifest's dataset record: ``context`` int64 byte ids per sequence (``[T]``, format 6). Ids
    are not normalised: ``mean`` / ``std`` are the one unused pair the format keeps."""
    return DatasetSpec(name="bytes", input_size=(context,), input_dtype="int64", mean=[0.0], std=[1.0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, required=True, help="a folder of *.txt files")
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/, mixnmatch/ and pareco/")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--context", type=int, default=128, help="bytes per window")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--algorithms", default="slim", help="slim, pareco or both")
    ap.add_argument("--history-size", type=int, default=40, help="PareCO's |H|")
    ap.add_argument(
        "--granularities", default="0.125,0.25,0.5,1",
        help="Mix'n'Match's FFN widths for the mixnmatch/ front from Slim's weights ('' for none)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    data = read_text(args.text)
    cut = int(0.9 * len(data))  # the last tenth: the front's held-out text
    held_out = windows(data[cut:], args.context, 64)
    for algorithm in args.algorithms.split(","):
        model = slimmable_lm(args.dim, args.heads, args.layers, args.context)
        t0 = time.perf_counter()
        trainer = train(
            algorithm, model, lambda e: windows(data[:cut], args.context, args.batch_size, SEED + e),
            args.epochs, args.history_size,
        )  # fmt: skip
        record = {"algorithm": algorithm, "epochs": args.epochs, "seed": SEED,
                  "wall_time_s": round(time.perf_counter() - t0, 3), "extra": trainer.strategy.record()}  # fmt: skip
        calib = windows(data[:cut], args.context, 64)[:1]  # no BatchNorm: calibration only runs the network
        built = build_front(args.out / algorithm, model, trainer.candidates(probe=calib[0]), calib,
                            evaluator(held_out), metric="loss", higher_is_better=False, training=record,
                            dataset=dataset(args.context))  # fmt: skip
        print(summary(algorithm, built), flush=True)
        if algorithm == "slim" and args.granularities:  # MatFormer's sub-models, from the same weights
            grains = [float(g) for g in args.granularities.split(",")]
            built = mixnmatch_front(args.out / "mixnmatch", model, calib, evaluator(held_out), metric="loss",
                                    higher_is_better=False, training=record, dataset=dataset(args.context),
                                    granularities=grains)  # fmt: skip
            print(summary("mixnmatch", built), flush=True)


def summary(name: str, built: BuiltFront) -> str:
    """One line per front: points, loss range, parameter range, manifest."""
    losses = [c.reported["loss"] for c in built.chosen if c.reported]
    params = [c.params for c in built.chosen]
    return (
        f"{name}: {len(built.chosen)} points, loss {min(losses):.3f}-{max(losses):.3f} nats/byte, "
        f"{min(params) / 1e3:.0f}K-{max(params) / 1e3:.0f}K params: {built.manifest}"
    )


if __name__ == "__main__":
    main()
