"""Training data: embedded digits, synthetic data, and ImageFolder trees (directories or tar archives).

Small images are decoded once into a uint8 tensor cache (safetensors) and kept on the training device, with
augmentation done as batched tensor ops; large images stream from a directory through a DataLoader. Every
batch order and augmentation is a pure function of (seed, epoch, rank, world_size), so a run resumed at an
epoch boundary repeats the original bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import posixpath
import tarfile
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from pareco_runtime.atomic import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SMALL_IMAGE_MAX = 64
"""Images whose longer side is at most this many pixels are decoded into memory in ``mode="auto"``."""
CACHE_FORMAT = "pareco-data/1"
CROP_PADDING = 4

_MODES = ("auto", "memory", "stream")
_SPLIT_NAMES = ("train", "val", "test")
_DEFAULT_STREAM_SIZE = 224
_DEFAULT_SIZE = 32
_SYNTHETIC_DEFAULT = (512, 10)
_DECODE_WORKERS = 2
_POOL_MIN_IMAGES = 2048
_POOL_CHUNK = 256
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


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
    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield up to ``num_batches`` un-augmented training batches in a seeded order (BN recalibration)."""


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


def _split(labels: Tensor, num_classes: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded stratified hold-out: ``(train_idx, val_idx)``, sorted, disjoint and covering.

    Each class contributes its share of ``round(n * val_fraction)`` validation images (largest remainders get
    the rounding), and always keeps at least one training image.
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
    perm = torch.randperm(n, generator=_generator("split", seed))
    shuffled = labels[perm]
    is_val = torch.zeros(n, dtype=torch.bool)
    for c in range(num_classes):
        is_val[perm[shuffled == c][: int(take[c])]] = True
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


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


def _crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Batched random crop (``padding`` zero pixels each side) and horizontal flip, as one gather.

    ``offsets`` is ``(N, 2)`` (row, column) in ``[0, 2 * padding]``; ``flips`` is a bool ``(N,)``.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols_base = torch.arange(w, device=images.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols_base, cols_base)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class TensorData(Data):
    """Data held as uint8 tensors on the device; augmentation is batched tensor ops on the device."""

    def __init__(
        self,
        name: str,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        class_names: list[str],
        device: torch.device,
    ) -> None:
        """Build from uint8 ``(N, 3, H, W)`` images and int64 labels; mean/std come from the training set."""
        train_x, train_y = train
        val_x, val_y = val
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
        )
        self._train_x = train_x.to(device)
        self._train_y = train_y.to(device=device, dtype=torch.int64)
        self._val_x = val_x.to(device)
        self._val_y = val_y.to(device=device, dtype=torch.int64)
        self._scale = (torch.tensor(std, device=device) * 255).view(1, -1, 1, 1)
        self._shift = (torch.tensor(mean, device=device) * 255).view(1, -1, 1, 1)

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
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (steps, batch_size, 2), generator=gen)
            flips = torch.randint(0, 2, (steps, batch_size), generator=gen).bool()
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for step in range(steps):
            sel = indices[step]
            x = self._train_x[sel]
            if gen is not None:
                x = _crop_flip(x, offsets[step], flips[step], CROP_PADDING)
            yield self._normalise(x), self._train_y[sel]

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all validation images in stored order; the last batch may be short."""
        for start in range(0, self.info.num_val, batch_size):
            stop = start + batch_size
            yield self._normalise(self._val_x[start:stop]), self._val_y[start:stop]

    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield seeded batches of un-augmented training images."""
        for batch in _calib_indices(self.info.num_train, batch_size, num_batches, seed):
            sel = batch.to(self.device)
            yield self._normalise(self._train_x[sel]), self._train_y[sel]


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
        train: list[tuple[str, int]],
        val: list[tuple[str, int]],
        class_names: list[str],
        image_size: int,
        device: torch.device,
        num_workers: int | None = None,
    ) -> None:
        """Build from ``(path, label)`` lists; ``num_workers`` defaults to min(8, CPU count)."""
        from torchvision.transforms import v2

        self.device = device
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.info = DataInfo(
            name=name,
            input_size=(3, image_size, image_size),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            class_names=list(class_names),
            num_train=len(train),
            num_val=len(val),
        )
        tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))]
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
                v2.Resize(int(image_size / 0.875), antialias=True),
                v2.CenterCrop(image_size),
                *tail,
            ]
        )
        self._train_aug = _StreamDataset(train, augment, image_size)
        self._train_plain = _StreamDataset(train, plain, image_size)
        self._val = _StreamDataset(val, plain, image_size)

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

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield all validation images (resize + centre crop) in fixed order; the last batch may be short."""
        n = self.info.num_val
        return self._load(
            self._val, ([(i, 0) for i in range(s, min(s + batch_size, n))] for s in range(0, n, batch_size))
        )

    def calib_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield seeded batches of training images with the validation transform."""
        batches = _calib_indices(self.info.num_train, batch_size, num_batches, seed)
        return self._load(self._train_plain, ([(i, 0) for i in b.tolist()] for b in batches))


# ----------------------------------------------------------------------------------------------------
# Decoding


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as RGB, loaded (palette images with transparency go through RGBA, as PIL asks)."""
    if im.mode == "RGB":
        im.load()
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _decode_image(source: bytes | str, size: int) -> np.ndarray | None:
    """Decode an encoded image (bytes or a file path) to uint8 ``(size, size, 3)``; ``None`` if unreadable."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            image = _to_rgb(im)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _DECODE_ERRORS:
        return None


def _decode_task(task: tuple[str, bytes | str], size: int) -> tuple[str, np.ndarray | None]:
    name, source = task
    return name, _decode_image(source, size)


def _decode_many(tasks: Iterator[tuple[str, bytes | str]], size: int) -> dict[str, np.ndarray | None]:
    """Decode ``(name, source)`` tasks; a pool of 2 processes takes over once there are many."""
    head = list(itertools.islice(tasks, _POOL_MIN_IMAGES))
    workers = min(_DECODE_WORKERS, os.cpu_count() or 1)
    work = functools.partial(_decode_task, size=size)
    if len(head) < _POOL_MIN_IMAGES or workers < 2:
        return dict(map(work, itertools.chain(head, tasks)))
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(workers) as pool:
        return dict(pool.imap(work, itertools.chain(head, tasks), chunksize=_POOL_CHUNK))


def _image_size(source: bytes | str) -> tuple[int, int] | None:
    """``(width, height)`` from an image header, or ``None`` if it is not a readable image."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.size
    except _DECODE_ERRORS:
        return None


# ----------------------------------------------------------------------------------------------------
# ImageFolder trees


def _is_image(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _clean(name: str) -> str | None:
    """Normalise an archive member name to a relative posix path; ``None`` for the root or hidden entries."""
    path = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    if path in ("", ".") or any(part.startswith(".") for part in path.split("/")):
        return None
    return path


@dataclass
class _Listing:
    """Files of a tree: image paths, non-image paths and directories, relative and in posix form."""

    images: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)


@dataclass
class _Tree:
    """An ImageFolder layout: sorted samples ``(path, label, is_val)``, class names, ignored files."""

    class_names: list[str]
    samples: list[tuple[str, int, bool]]
    presplit: bool
    ignored: list[str]


def _wrapper_depth(parts: list[tuple[str, ...]]) -> int:
    """How many leading folders every image shares (a wrapper such as ``cifar10/``) before the tree starts."""
    depth = 0
    while all(len(p) >= depth + 3 for p in parts) and len({p[depth] for p in parts}) == 1:
        if parts[0][depth] in _SPLIT_NAMES:
            break
        depth += 1
    return depth


def _build_tree(listing: _Listing, where: str) -> _Tree:
    """Find the layout (``train/`` + ``val/`` or ``test/``, or bare class folders) and label every image."""
    if not listing.images:
        raise DataError(
            f"{where}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); point it at an "
            "ImageFolder tree: <class>/<image> or train/<class>/<image> + val/<class>/<image>"
        )
    image_parts = [tuple(p.split("/")) for p in listing.images]
    depth = _wrapper_depth(image_parts)
    wrapper = image_parts[0][:depth]
    dir_parts = [tuple(d.split("/")) for d in listing.dirs]
    dir_parts = [d[depth:] for d in dir_parts if d[:depth] == wrapper and len(d) > depth]
    top = {p[depth] for p in image_parts if len(p) > depth + 1} | {d[0] for d in dir_parts}
    val_name = "val" if "val" in top else "test" if "test" in top else None
    if "train" in top and val_name is not None:
        roots = {("train",): False, (val_name,): True}
    elif "train" in top:
        roots = {("train",): False}
    else:
        roots = {(): False}
    presplit = len(roots) == 2
    counts: dict[tuple[tuple[str, ...], str], int] = {}
    for d in dir_parts:
        for root in roots:
            if len(d) == len(root) + 1 and d[: len(root)] == root:
                counts.setdefault((root, d[-1]), 0)
    members: list[tuple[str, tuple[str, ...], str, bool]] = []
    ignored: list[str] = []
    unused_splits = {("val",), ("test",)} - set(roots)
    for path, parts in zip(listing.images, image_parts, strict=True):
        rel = parts[depth:]
        root = next((r for r in roots if len(rel) >= len(r) + 2 and rel[: len(r)] == r), None)
        if root is None:
            # Images of an unused split (test/ beside val/) are left out quietly; others are reported.
            if rel[:1] not in unused_splits:
                ignored.append(path)
            continue
        cls = rel[len(root)]
        counts[(root, cls)] = counts.get((root, cls), 0) + 1
        members.append((path, root, cls, roots[root]))
    ignored += [p for p in listing.others if len(p.split("/")) > depth + 1]
    if not counts:
        raise DataError(
            f"{where}: images are not inside class folders; arrange them as <class>/<image> "
            "or train/<class>/<image> + val/<class>/<image>"
        )
    for (root, cls), count in sorted(counts.items()):
        if count == 0:
            folder = "/".join(wrapper + root + (cls,))
            raise DataError(f"{where}: class folder '{folder}' has no images; add images to it or remove it")
    train_root = next(r for r, is_val in roots.items() if not is_val)
    class_names = sorted(cls for root, cls in counts if root == train_root)
    if len(class_names) < 2:
        raise DataError(
            f"{where}: only one class ('{class_names[0]}'); a classifier needs at least two class folders"
        )
    label = {name: i for i, name in enumerate(class_names)}
    for root, cls in counts:
        if cls not in label:
            folder = "/".join(wrapper + root + (cls,))
            raise DataError(
                f"{where}: validation class folder '{folder}' has no training folder of the same name; "
                "rename or remove it"
            )
    samples = sorted((path, label[cls], is_val) for path, _, cls, is_val in members)
    return _Tree(class_names=class_names, samples=samples, presplit=presplit, ignored=sorted(ignored))


def _warn_ignored(where: str, tree: _Tree) -> None:
    if tree.ignored:
        warnings.warn(
            f"{where}: ignored {len(tree.ignored)} file(s) that are not images in class folders "
            f"(e.g. '{tree.ignored[0]}')",
            stacklevel=3,
        )


def _walk(root: Path) -> _Listing:
    """List a directory tree (following links, skipping hidden entries), sorted."""
    listing = _Listing()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        if prefix:
            listing.dirs.add(rel)
        for name in sorted(filenames):
            if not name.startswith("."):
                (listing.images if _is_image(name) else listing.others).append(prefix + name)
    listing.images.sort()
    listing.others.sort()
    return listing


def _archive_members(path: Path, listing: _Listing) -> Iterator[tuple[str, bytes]]:
    """Stream ``(name, bytes)`` of the image members of a tar archive, filling ``listing`` on the way."""
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            name = _clean(member.name)
            if name is None:
                continue
            if member.isdir():
                listing.dirs.add(name)
            elif member.isfile():
                if _is_image(name):
                    listing.images.append(name)
                    handle = archive.extractfile(member)
                    yield name, handle.read() if handle is not None else b""
                else:
                    listing.others.append(name)


def _first_image_size(sources: Iterable[bytes | str]) -> tuple[int, int] | None:
    """Size of the first readable image among ``sources``."""
    return next((size for size in map(_image_size, sources) if size is not None), None)


# ----------------------------------------------------------------------------------------------------
# Cache


def _cache_dir(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("PARECO_CACHE") or Path.home() / ".cache" / "pareco").expanduser()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_listing(root: Path, images: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in images:
        st = (root / rel).stat()
        digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class _Decoded:
    """Decoded images ``(N, 3, S, S)`` uint8 with labels, validation flags and class names."""

    images: Tensor
    labels: Tensor
    is_val: Tensor
    class_names: list[str]
    presplit: bool


def _read_cache(file: Path) -> _Decoded | None:
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), "pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            return None
        tensors = load_file(str(file))
        return _Decoded(
            images=tensors["images"],
            labels=tensors["labels"],
            is_val=tensors["is_val"].bool(),
            class_names=json.loads(meta["class_names"]),
            presplit=meta["presplit"] == "1",
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        warnings.warn(f"{file}: unreadable data cache ({exc}); decoding the images again", stacklevel=3)
        return None


def _write_cache(file: Path, decoded: _Decoded) -> None:
    tensors = {
        "images": decoded.images.contiguous(),
        "labels": decoded.labels,
        "is_val": decoded.is_val.to(torch.uint8),
    }
    meta = {
        "format": CACHE_FORMAT,
        "class_names": json.dumps(decoded.class_names),
        "presplit": "1" if decoded.presplit else "0",
    }
    try:
        with atomic_path(file) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OSError as exc:
        warnings.warn(
            f"{file}: cannot write the data cache ({exc}); the next load decodes again", stacklevel=3
        )


def _assemble(where: str, tree: _Tree, arrays: dict[str, np.ndarray | None]) -> _Decoded:
    """Stack the decoded images of ``tree`` in sample order, skipping (and reporting) unreadable ones."""
    kept = [(arrays[path], label, is_val) for path, label, is_val in tree.samples if arrays[path] is not None]
    bad = [path for path, _, _ in tree.samples if arrays[path] is None]
    if bad:
        warnings.warn(f"{where}: skipped {len(bad)} unreadable image(s) (e.g. '{bad[0]}')", stacklevel=3)
    labels = torch.tensor([label for _, label, _ in kept], dtype=torch.int64)
    missing = sorted(set(range(len(tree.class_names))) - set(labels.tolist()))
    if missing:
        raise DataError(
            f"{where}: no readable image in class '{tree.class_names[missing[0]]}'; "
            "replace its files or remove the folder"
        )
    images = torch.from_numpy(np.stack([a for a, _, _ in kept]))
    return _Decoded(
        images=images.permute(0, 3, 1, 2).contiguous(),
        labels=labels,
        is_val=torch.tensor([v for _, _, v in kept], dtype=torch.bool),
        class_names=tree.class_names,
        presplit=tree.presplit,
    )


# ----------------------------------------------------------------------------------------------------
# Sources


def _tensor_data(
    name: str,
    images: Tensor,
    labels: Tensor,
    class_names: list[str],
    val_fraction: float,
    seed: int,
    device: torch.device,
) -> TensorData:
    """Hold out a seeded stratified ``val_fraction`` of ``images`` and build in-memory data."""
    train_idx, val_idx = _split(labels, len(class_names), val_fraction, seed)
    return TensorData(
        name, (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]), class_names, device
    )


def _from_decoded(
    name: str, decoded: _Decoded, val_fraction: float, seed: int, device: torch.device
) -> TensorData:
    if not decoded.presplit:
        return _tensor_data(
            name, decoded.images, decoded.labels, decoded.class_names, val_fraction, seed, device
        )
    train, val = ~decoded.is_val, decoded.is_val
    return TensorData(
        name,
        (decoded.images[train], decoded.labels[train]),
        (decoded.images[val], decoded.labels[val]),
        decoded.class_names,
        device,
    )


def _digits(image_size: int, val_fraction: float, seed: int, device: torch.device) -> TensorData:
    """scikit-learn's bundled 8x8 digits, scaled to 0..255, upsampled once, grey replicated to RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (torch.from_numpy(digits.images).float() * (255 / 16)).round()
    big = F.interpolate(small[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    names = [str(i) for i in range(10)]
    return _tensor_data("digits", images, labels, names, val_fraction, seed, device)


def _synthetic(
    spec: str, image_size: int, val_fraction: float, seed: int, device: torch.device
) -> TensorData:
    """``synthetic[:N:C]``: N noisy images of C classes, each class a smooth colour pattern of its own."""
    fields = spec.split(":")[1:]
    try:
        n, c = (int(f) for f in fields) if fields else _SYNTHETIC_DEFAULT
    except ValueError:
        raise DataError(
            f"'{spec}' is not a synthetic spec; write 'synthetic' or 'synthetic:N:C' (integers)"
        ) from None
    if c < 2 or n < c:
        raise DataError(f"'{spec}': need at least 2 classes and one image per class (N >= C >= 2)")
    gen = _generator("synthetic", n, c, image_size, seed)
    patterns = torch.rand(c, 3, 4, 4, generator=gen)
    patterns = F.interpolate(patterns, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.randperm(n, generator=gen) % c
    noise = torch.randn(n, 3, image_size, image_size, generator=gen)
    images = (48 + 160 * patterns[labels] + 24 * noise).round().clamp(0, 255).to(torch.uint8)
    names = [f"class{i}" for i in range(c)]
    return _tensor_data("synthetic", images, labels, names, val_fraction, seed, device)


def _dataset_name(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load_directory(
    root: Path,
    image_size: int | None,
    seed: int,
    val_fraction: float,
    cache: Path,
    device: torch.device,
    mode: str,
) -> Data:
    where = str(root)
    listing = _walk(root)
    tree = _build_tree(listing, where)
    first = _first_image_size(str(root / path) for path, _, _ in tree.samples)
    if first is None:
        raise DataError(f"{where}: none of the {len(tree.samples)} image files can be read; check the files")
    memory = mode == "memory" or (mode == "auto" and max(first) <= SMALL_IMAGE_MAX)
    name = _dataset_name(root)
    if not memory:
        _warn_ignored(where, tree)
        train = [(str(root / p), label) for p, label, is_val in tree.samples if not is_val]
        val = [(str(root / p), label) for p, label, is_val in tree.samples if is_val]
        if not tree.presplit:
            labels = torch.tensor([label for _, label in train], dtype=torch.int64)
            train_idx, val_idx = _split(labels, len(tree.class_names), val_fraction, seed)
            train, val = [train[i] for i in train_idx.tolist()], [train[i] for i in val_idx.tolist()]
        return StreamData(name, train, val, tree.class_names, image_size or _DEFAULT_STREAM_SIZE, device)
    size = image_size or min(first)
    file = cache / f"{_sha256_listing(root, [p for p, _, _ in tree.samples])}-{size}.safetensors"
    decoded = _read_cache(file)
    if decoded is None:
        _warn_ignored(where, tree)
        arrays = _decode_many(((p, str(root / p)) for p, _, _ in tree.samples), size)
        decoded = _assemble(where, tree, arrays)
        _write_cache(file, decoded)
    return _from_decoded(name, decoded, val_fraction, seed, device)


def _load_archive(
    path: Path,
    image_size: int | None,
    seed: int,
    val_fraction: float,
    cache: Path,
    device: torch.device,
    mode: str,
) -> Data:
    where = str(path)
    try:
        digest = _sha256_file(path)
        peek = _Listing()
        first = _first_image_size(source for _, source in _archive_members(path, peek))
        if first is None:  # the whole archive was read: report a layout problem first, if there is one
            _build_tree(peek, where)
            raise DataError(f"{where}: no readable image in the archive; re-create it from good images")
        if mode == "stream" or (mode == "auto" and max(first) > SMALL_IMAGE_MAX):
            raise DataError(
                f"{where}: images of {first[0]}x{first[1]} px stream from a directory, not an archive; "
                "extract the archive and pass the folder, or use mode='memory'"
            )
        size = image_size or min(first)
        file = cache / f"{digest}-{size}.safetensors"
        decoded = _read_cache(file)
        if decoded is None:
            listing = _Listing()
            arrays = _decode_many(_archive_members(path, listing), size)
            tree = _build_tree(listing, where)
            _warn_ignored(where, tree)
            decoded = _assemble(where, tree, arrays)
            _write_cache(file, decoded)
    except _ARCHIVE_ERRORS as exc:
        raise DataError(
            f"{where}: cannot read the archive ({type(exc).__name__}: {exc}); re-download or re-create it"
        ) from exc
    return _from_decoded(_dataset_name(path), decoded, val_fraction, seed, device)


def load_data(
    spec: str,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    cache_dir: str | None = None,
    device: str | torch.device | None = None,
    mode: str = "auto",
) -> Data:
    """Load a dataset for training.

    ``spec`` is ``"digits"`` (scikit-learn's bundled 8x8 digits, no download), ``"synthetic"`` /
    ``"synthetic:N:C"`` (seeded random data for tests), or a directory / ``.tar``, ``.tar.gz``, ``.tgz``
    archive holding an ImageFolder tree (``train/<class>/*`` + ``val/`` or ``test/``, or bare ``<class>/*``,
    in which case a seeded stratified ``val_fraction`` is held out). ``mode="auto"`` decodes small images
    (longer side <= 64 px, judged from the first image) into memory, cached in ``cache_dir`` (default
    ``$PARECO_CACHE`` or ``~/.cache/pareco``), and streams larger ones from a directory; ``"memory"`` and
    ``"stream"`` force one. ``image_size`` defaults to 32 for digits/synthetic, the first image's shorter side
    in memory and 224 when streaming. ``device`` defaults to CUDA when available. Raises ``DataError``.
    """
    if mode not in _MODES:
        raise DataError(f"mode '{mode}' is not one of {', '.join(_MODES)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
    dev = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if spec == "digits" or spec == "synthetic" or spec.startswith("synthetic:"):
        if mode == "stream":
            raise DataError(f"'{spec}' is held in memory and cannot be streamed; use mode='auto' or 'memory'")
        if spec == "digits":
            return _digits(image_size or _DEFAULT_SIZE, val_fraction, seed, dev)
        return _synthetic(spec, image_size or _DEFAULT_SIZE, val_fraction, seed, dev)
    path = Path(spec).expanduser()
    cache = _cache_dir(cache_dir)
    if path.is_dir():
        return _load_directory(path, image_size, seed, val_fraction, cache, dev, mode)
    if not path.exists():
        raise DataError(
            f"{spec}: no such file or directory; pass an ImageFolder directory, a .tar/.tar.gz/.tgz archive "
            "of one, 'digits' or 'synthetic'"
        )
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{spec}: not a directory or a .tar/.tar.gz/.tgz archive; pass an ImageFolder tree")
    return _load_archive(path, image_size, seed, val_fraction, cache, dev, mode)
