"""Data held in memory as uint8 tensors on the device, augmented with batched tensor ops."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Data, DataInfo, Holdout
from .order import _calib_indices, _epoch_indices, _generator, _split

CROP_PADDING = 4


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (of values / 255) of uint8 NCHW images, via 256-bin histograms."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        total = hist.sum()
        mean = float((hist * levels).sum() / total)
        var = float((hist * levels.square()).sum() / total) - mean * mean
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def _crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int, fill: int = 0) -> Tensor:
    """Batched random crop (``padding`` pixels of ``fill`` each side) and horizontal flip, as one gather.

    ``offsets`` is ``(N, 2)`` (row, column) in ``[0, 2 * padding]``; ``flips`` is a bool ``(N,)``.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), value=fill)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols_base = torch.arange(w, device=images.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols_base, cols_base)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class TensorData(Data):
    """Data held as uint8 tensors on the device; augmentation is batched tensor ops on the device.

    Targets are kept as ``target_dtype`` and yielded as ``batch_target_dtype`` (int64 labels); a
    subclass with targets that move with the image (segmentation masks, boxes) overrides :meth:`_augment`.
    """

    padding = CROP_PADDING
    target_dtype = torch.int64
    batch_target_dtype = torch.int64

    def __init__(
        self,
        name: str,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        class_names: list[str],
        device: torch.device,
        selection: tuple[Tensor, Tensor] | None = None,
        val_split: str = "val",
    ) -> None:
        """Build from uint8 ``(N, 3, H, W)`` images and int64 labels; mean/std come from the training set.

        ``selection``: images held out of training to choose front points on (None: choose on ``val``).
        """
        train_x, train_y = train
        val_x, val_y = val
        sel_x, sel_y = selection if selection is not None else val
        mean, std = _channel_stats(train_x)
        self.device = device
        self.info = DataInfo(
            name=name,
            input_size=(int(train_x.shape[1]), int(train_x.shape[2]), int(train_x.shape[3])),
            mean=mean,
            std=std,
            class_names=list(class_names),
            num_train=int(train_x.shape[0]),
            num_val=int(val_x.shape[0]),
            num_selection=0 if selection is None else int(sel_x.shape[0]),
            val_split=val_split,
        )
        self._train_x = train_x.to(device)
        self._train_y = train_y.to(device=device, dtype=self.target_dtype)
        self._val_x = val_x.to(device)
        self._val_y = val_y.to(device=device, dtype=self.target_dtype)
        self._sel_x = sel_x.to(device)
        self._sel_y = sel_y.to(device=device, dtype=self.target_dtype)
        self.renormalise(mean, std)

    def renormalise(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise batches with ``mean`` / ``std`` (of pixels / 255) instead of the training images' own."""
        self.info.mean, self.info.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self._scale = (torch.tensor(self.info.std, device=self.device) * 255).view(1, -1, 1, 1)
        self._shift = (torch.tensor(self.info.mean, device=self.device) * 255).view(1, -1, 1, 1)

    def _normalise(self, images: Tensor) -> Tensor:
        return (images.float() - self._shift) / self._scale

    def train_batches(
        self, batch_size: int, epoch: int, seed: int, augment: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield this rank's training batches; with ``augment``, random 4-pixel-padded crops and flips."""
        self.steps_per_epoch(batch_size, world_size)
        indices = _epoch_indices(self.info.num_train, batch_size, epoch, seed, rank, world_size)
        gen = _generator("augment", seed, epoch, rank, world_size)
        return self._train_iter(indices, gen if augment else None)

    def _train_iter(self, indices: Tensor, gen: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        # The whole epoch's indices and crop/flip draws go to the device at once.
        steps, batch_size = indices.shape
        indices = indices.to(self.device)
        if gen is not None:
            offsets = torch.randint(0, 2 * self.padding + 1, (steps, batch_size, 2), generator=gen)
            flips = torch.randint(0, 2, (steps, batch_size), generator=gen).bool()
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for step in range(steps):
            sel = indices[step]
            x, y = self._train_x[sel], self._train_y[sel]
            if gen is not None:
                x, y = self._augment(x, y, offsets[step], flips[step])
            yield self._normalise(x), y.to(self.batch_target_dtype)

    def _augment(self, x: Tensor, y: Tensor, offsets: Tensor, flips: Tensor) -> tuple[Tensor, Tensor]:
        """A training batch cropped at ``offsets`` and flipped where ``flips``: the images; labels stay."""
        return _crop_flip(x, offsets, flips, self.padding), y

    def _in_order(self, x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, x.shape[0], batch_size):
            stop = start + batch_size
            yield self._normalise(x[start:stop]), y[start:stop].to(self.batch_target_dtype)

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all validation images in stored order; the last batch may be short."""
        return self._in_order(self._val_x, self._val_y, batch_size)

    def selection_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all selection images (the validation images without a selection split) in stored order."""
        return self._in_order(self._sel_x, self._sel_y, batch_size)

    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield seeded batches of un-augmented training images."""
        for batch in _calib_indices(self.info.num_train, batch_size, num_batches, seed):
            sel = batch.to(self.device)
            yield self._normalise(self._train_x[sel]), self._train_y[sel].to(self.batch_target_dtype)


def _tensor_data(
    name: str,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    class_names: list[str],
    split: Holdout,
    device: torch.device,
    val_split: str = "val",
) -> TensorData:
    """In-memory data from training images and, when the tree has one, a validation split.

    ``val_split`` names ``val``. Without ``val``, a seeded stratified ``split.val_fraction`` of the training images is held out as
    validation; then a ``split.select_fraction`` of the remaining training images is held out for selection.
    """
    images, labels = train
    if val is None:
        train_idx, val_idx = _split(labels, len(class_names), split.val_fraction, split.seed)
        val = images[val_idx], labels[val_idx]
        images, labels = images[train_idx], labels[train_idx]
    selection = None
    if split.select_fraction > 0:
        train_idx, sel_idx = _split(labels, len(class_names), split.select_fraction, split.seed, "selection")
        selection = images[sel_idx], labels[sel_idx]
        images, labels = images[train_idx], labels[train_idx]
    return TensorData(name, (images, labels), val, class_names, device, selection, val_split)
