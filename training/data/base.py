"""What every dataset offers the trainers: :class:`Data`, its :class:`DataInfo` and :class:`DataError`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


class DataError(ValueError):
    """A dataset that cannot be used; the message names the path, what is wrong and what to do."""


@dataclass
class DataInfo:
    """What a trained model must know about its data: shapes, normalisation and class names."""

    name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    num_train: int
    num_val: int
    # Images of the selection split, held out of the training images (never trained on); front points
    # are chosen on it. 0: no such split, points are chosen on the validation split itself.
    num_selection: int = 0
    # The validation split's name: "test" or "val" for a train/ + test/ (or val/) tree, "val" for a
    # seeded hold-out of a tree without one.
    val_split: str = "val"
    # The evaluation resize (pareco_runtime.preprocess.Preprocess.to_dict); None: the whole image is
    # resized to the input size, as small images are when decoded.
    preprocess: dict[str, Any] | None = None


@dataclass(frozen=True)
class Holdout:
    """How images are held out of training: ``val_fraction`` as validation where the tree has no
    validation split, then ``select_fraction`` of the remaining training images for choosing front
    points (0: none, points are chosen on the validation split); both seeded and stratified by ``seed``."""

    val_fraction: float = 0.2
    select_fraction: float = 0.1
    seed: int = 0


class Data(ABC):
    """A training/validation split that yields normalised NCHW float32 batches on ``device``."""

    info: DataInfo
    device: torch.device

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Number of full batches per rank and epoch (the last partial global batch is dropped)."""
        if batch_size < 1 or world_size < 1:
            raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size} and {world_size}")
        steps = self.info.num_train // (batch_size * world_size)
        if steps == 0:
            raise DataError(
                f"{self.info.name}: {self.info.num_train} training images are fewer than one global batch of "
                f"{batch_size * world_size} ({batch_size} x {world_size} ranks); use a smaller batch size"
            )
        return steps

    @abstractmethod
    def train_batches(
        self, batch_size: int, epoch: int, seed: int, augment: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``steps_per_epoch`` training batches ``(x, y)`` for this rank.

        Order and augmentation depend only on ``(seed, epoch, rank, world_size)``. Global batch ``s`` is the
        slice ``[s*B*W, (s+1)*B*W)`` of one seeded permutation shared by all ranks; rank ``r`` takes its
        ``r``-th block of ``B``, so the shards are disjoint and equal in length.
        """

    @abstractmethod
    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield every validation image once, in a fixed order, without augmentation."""

    @abstractmethod
    def selection_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield every selection image once, in a fixed order, without augmentation; the validation
        images when the data has no selection split (``info.num_selection == 0``)."""

    @abstractmethod
    def renormalise(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise every batch from now on with ``mean`` / ``std`` (per channel, of pixels / 255) instead
        of the data's own, e.g. with those a trained network expects; ``info.mean`` / ``info.std`` say so."""

    @abstractmethod
    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield up to ``num_batches`` un-augmented training batches in a seeded order (BN recalibration)."""
