"""Large images streamed from disk through a DataLoader with torchvision v2 transforms."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor

from pareco_runtime.preprocess import Preprocess

from .base import Data, DataInfo
from .decode import _DECODE_ERRORS, _to_rgb
from .order import _calib_indices, _epoch_indices, _generator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _StreamDataset(torch.utils.data.Dataset):
    """Images read from disk by path; indexed by ``(index, sample_seed)`` so augmentation is reproducible."""

    def __init__(self, samples: list[tuple[str, int]], transform: torch.nn.Module, image_size: int) -> None:
        self.samples = samples
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, sample_seed = item
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                image = _to_rgb(im)
        except _DECODE_ERRORS as exc:
            warnings.warn(f"{path}: unreadable image ({exc}); a black image stands in for it", stacklevel=2)
            image = Image.new("RGB", (self.image_size, self.image_size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), label


class StreamData(Data):
    """ImageNet-style data streamed from a directory through a DataLoader with torchvision v2 transforms."""

    def __init__(
        self,
        name: str,
        splits: tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]] | None],
        class_names: list[str],
        image_size: int,
        device: torch.device,
        num_workers: int | None = None,
        val_split: str = "val",
    ) -> None:
        """Build from ``(path, label)`` lists: (train, val, selection; None: choose points on val).

        ``val_split`` names the validation list; ``num_workers`` defaults to min(8, CPU count).
        """
        train, val, selection = splits
        from torchvision.transforms import v2

        self.device = device
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        preprocess = Preprocess(
            (image_size, image_size), IMAGENET_MEAN, IMAGENET_STD, "shorter_side", int(image_size / 0.875)
        ).to_dict()
        self.info = DataInfo(
            name=name,
            input_size=(3, image_size, image_size),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            class_names=list(class_names),
            num_train=len(train),
            num_val=len(val),
            num_selection=0 if selection is None else len(selection),
            val_split=val_split,
            preprocess=preprocess,
        )
        # One Normalize in every transform, so that renormalise changes them all.
        self._normalize = v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))
        tail = [v2.ToDtype(torch.float32, scale=True), self._normalize]
        augment = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.4, 0.4, 0.4),
                *tail,
            ]
        )
        plain = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(preprocess["resize"], antialias=True),
                v2.CenterCrop(image_size),
                *tail,
            ]
        )
        self._train_aug = _StreamDataset(train, augment, image_size)
        self._train_plain = _StreamDataset(train, plain, image_size)
        self._val = _StreamDataset(val, plain, image_size)
        self._selection = self._val if selection is None else _StreamDataset(selection, plain, image_size)

    def renormalise(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise batches with ``mean`` / ``std`` (of pixels / 255) instead of ImageNet's."""
        self.info.mean, self.info.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self._normalize.mean, self._normalize.std = list(self.info.mean), list(self.info.std)

    def _load(
        self, dataset: _StreamDataset, batches: Iterable[list[tuple[int, int]]]
    ) -> Iterator[tuple[Tensor, Tensor]]:
        pin = self.device.type == "cuda"
        # Samples carry their own seeds; the loader's generator only keeps it off the global RNG.
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=list(batches),
            num_workers=self.num_workers,
            pin_memory=pin,
            generator=torch.Generator(),
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)

    def train_batches(
        self, batch_size: int, epoch: int, seed: int, augment: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield this rank's training batches; with ``augment``, RandomResizedCrop + flip + ColorJitter."""
        self.steps_per_epoch(batch_size, world_size)
        indices = _epoch_indices(self.info.num_train, batch_size, epoch, seed, rank, world_size)
        seeds = torch.randint(
            0, 2**62, indices.shape, generator=_generator("augment", seed, epoch, rank, world_size)
        )
        batches = [
            list(zip(b.tolist(), s.tolist(), strict=True)) for b, s in zip(indices, seeds, strict=True)
        ]
        return self._load(self._train_aug if augment else self._train_plain, batches)

    def _in_order(self, dataset: _StreamDataset, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(dataset)
        return self._load(
            dataset, ([(i, 0) for i in range(s, min(s + batch_size, n))] for s in range(0, n, batch_size))
        )

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all validation images (resize + centre crop) in fixed order; the last batch may be short."""
        return self._in_order(self._val, batch_size)

    def selection_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all selection images (the validation images without a selection split) in fixed order."""
        return self._in_order(self._selection, batch_size)

    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield seeded batches of training images with the validation transform."""
        batches = _calib_indices(self.info.num_train, batch_size, num_batches, seed)
        return self._load(self._train_plain, ([(i, 0) for i in b.tolist()] for b in batches))
