"""Seeded orders: each epoch's batches, calibration batches and the hold-out splits.

Each is a pure function of its seeds (never the global RNG), so a resumed run repeats them bit for bit.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def _derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``, stable across processes and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (never the global RNG)."""
    return torch.Generator().manual_seed(_derive_seed(*parts))


def _epoch_indices(num: int, batch_size: int, epoch: int, seed: int, rank: int, world_size: int) -> Tensor:
    """Index matrix ``(steps, batch_size)`` of this rank's training samples for ``epoch`` (CPU, int64)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    steps = num // (batch_size * world_size)
    perm = torch.randperm(num, generator=_generator("order", seed, epoch))
    return perm[: steps * batch_size * world_size].view(steps, world_size, batch_size)[:, rank]


def _calib_indices(num: int, batch_size: int, num_batches: int, seed: int) -> list[Tensor]:
    """Seeded calibration batches of training indices; the last one may be short when data runs out."""
    perm = torch.randperm(num, generator=_generator("calib", seed))[: batch_size * num_batches]
    return list(perm.split(batch_size))


def _split(
    labels: Tensor, num_classes: int, val_fraction: float, seed: int, purpose: str = "split"
) -> tuple[Tensor, Tensor]:
    """Seeded stratified hold-out: ``(train_idx, val_idx)``, sorted, disjoint and covering.

    Each class contributes its share of ``round(n * val_fraction)`` validation images (largest remainders get
    the rounding), and always keeps at least one training image. ``purpose`` keys the permutation, so the
    validation split and the selection split carved out of the training images are drawn independently.
    """
    n = labels.numel()
    counts = torch.bincount(labels, minlength=num_classes)
    ideal = counts.double() * val_fraction
    take = ideal.floor().long()
    remainder = round(n * val_fraction) - int(take.sum())
    if remainder > 0:
        order = torch.sort(ideal - take, descending=True, stable=True).indices
        take[order[:remainder]] += 1
    take = torch.minimum(take, (counts - 1).clamp(min=0))
    perm = torch.randperm(n, generator=_generator(purpose, seed))
    shuffled = labels[perm]
    is_val = torch.zeros(n, dtype=torch.bool)
    for c in range(num_classes):
        is_val[perm[shuffled == c][: int(take[c])]] = True
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()
