"""Segmentation data: a folder of images and class-id masks, decoded into memory, augmented jointly.

Two layouts (``--task segmentation --data DATA``)::

    DATA/images/NAME.jpg|.png + DATA/masks/NAME.png        a seeded share held out as validation
    DATA/train/{images,masks}/ + DATA/val/{images,masks}/  (or test/ for val/)
    DATA/classes.txt                                       optional: one class name per line, id order

A mask has its image's size and holds, per pixel, that pixel's class id (a single-channel PNG: mode
L, P or I); 255 marks pixels that are neither trained on nor scored. The class count is
``num_classes`` where given, else the lines of ``classes.txt``, else the largest id in the masks
plus one. Images and masks are resized to ``image_size`` squares (bilinear and nearest) and kept in
memory; a training batch is randomly padded-cropped and flipped, image and mask alike, from a
generator seeded by (seed, epoch, rank), so a resumed run repeats it bit for bit. Any bad file is
a :class:`DataError` naming it and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import DataError, Holdout
from .decode import _DECODE_ERRORS, _decode_many, _image_size
from .memory import TensorData, _crop_flip
from .order import _split

IGNORE_INDEX = 255
"""The mask value of pixels that are not trained on and not scored."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASSES_FILE = "classes.txt"
# Single-channel modes whose values are class ids: bilevel, 8-bit grey, palette indices, integers.
_ID_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16L", "I;16B"})
_LAYOUT = "lay it out as images/ + masks/, or train/{images,masks} + val/{images,masks}"


@dataclass
class _Masks:
    """The masks of some images at the training size (uint8 ``(N, S, S)``) and the largest class id
    in each mask (-1 where a mask is all ignore)."""

    masks: Tensor
    max_ids: list[int]


class SegmentationData(TensorData):
    """Images with per-pixel class ids, held in memory; batches are ``(images, masks)`` with int64
    masks ``(N, H, W)`` (255: ignore). Augmentation crops and flips image and mask alike, the mask's
    padding ignored. ``classes_from`` says where the class count came from."""

    target_dtype = torch.uint8

    def __init__(
        self,
        name: str,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        class_names: list[str],
        device: torch.device,
        selection: tuple[Tensor, Tensor] | None = None,
        val_split: str = "val",
        classes_from: str = "masks",
    ) -> None:
        super().__init__(name, train, val, class_names, device, selection, val_split)
        # An eighth of the side each way: CIFAR's 4 px at 32 px, the classification pad-crop.
        self.padding = max(1, self.info.input_size[-1] // 8)
        self.classes_from = classes_from

    def _augment(self, x: Tensor, y: Tensor, offsets: Tensor, flips: Tensor) -> tuple[Tensor, Tensor]:
        """Image and mask cropped at the same ``offsets`` and flipped alike; the mask's padding is ignored."""
        mask = _crop_flip(y[:, None], offsets, flips, self.padding, fill=IGNORE_INDEX)[:, 0]
        return _crop_flip(x, offsets, flips, self.padding), mask


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``folder/images`` and ``folder/masks``, sorted by image name."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise DataError(f"{folder}: no images/ folder; {_LAYOUT}")
    if not masks_dir.is_dir():
        raise DataError(f"{folder}: no masks/ folder beside images/; put one class-id PNG per image there")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{images_dir}: no .jpg or .png images; put the images there")
    pairs: list[tuple[Path, Path]] = []
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DataError(
                f"{image}: shares its mask {image.stem}.png with {stems[image.stem]}; rename one of them"
            )
        stems[image.stem] = image
        mask = masks_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DataError(f"{image}: no mask {mask}; add its class-id PNG or remove the image")
        pairs.append((image, mask))
    return pairs


def _read_mask(path: Path, image: Path, size: int) -> tuple[np.ndarray, int]:
    """The class ids of mask ``path`` resized to ``size`` x ``size`` (nearest), and its largest id
    other than ignore (-1 for none); DataError where it is unreadable, not a class-id map, or of
    another size than ``image``."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, mask_size = im.mode, im.size
            ids = np.asarray(im) if mode in _ID_MODES else None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{path}: cannot read the mask ({type(exc).__name__}: {exc}); re-save it as a PNG of class ids"
        ) from None
    if ids is None:
        raise DataError(
            f"{path}: a {mode} image, not a class-id map; save each pixel's class id in one channel "
            f"(a mode L or P PNG, {IGNORE_INDEX} = ignore)"
        )
    image_size = _image_size(str(image))
    if image_size is None:
        raise DataError(f"{image}: cannot be read as an image; replace it or remove it with its mask")
    if image_size != mask_size:
        raise DataError(
            f"{path}: {mask_size[0]}x{mask_size[1]} px, but its image {image.name} is "
            f"{image_size[0]}x{image_size[1]} px; save the mask at its image's size"
        )
    ids = ids.astype(np.int64)
    labelled = ids[ids != IGNORE_INDEX]
    if labelled.size and (labelled.min() < 0 or labelled.max() > IGNORE_INDEX):
        bad = int(labelled.min() if labelled.min() < 0 else labelled.max())
        raise DataError(
            f"{path}: class id {bad} is outside 0..{IGNORE_INDEX - 1}; use ids below {IGNORE_INDEX} "
            f"({IGNORE_INDEX} = ignore)"
        )
    small = Image.fromarray(ids.astype(np.uint8), mode="L")
    if small.size != (size, size):
        small = small.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(small, dtype=np.uint8), int(labelled.max()) if labelled.size else -1


def _images(pairs: list[tuple[Path, Path]], size: int) -> Tensor:
    """The images of ``pairs`` as uint8 ``(N, 3, S, S)``; DataError naming the first unreadable one."""
    arrays = _decode_many(((str(image), str(image)) for image, _ in pairs), size)
    decoded = []
    for image, _ in pairs:
        array = arrays[str(image)]
        if array is None:
            raise DataError(f"{image}: cannot be read as an image; replace it or remove it with its mask")
        decoded.append(array)
    stacked = np.stack(decoded)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def _masks(pairs: list[tuple[Path, Path]], size: int) -> _Masks:
    read = [_read_mask(mask, image, size) for image, mask in pairs]
    return _Masks(torch.from_numpy(np.stack([ids for ids, _ in read])), [top for _, top in read])


def _class_names(root: Path, num_classes: int | None, largest: int) -> tuple[list[str], str]:
    """The class names and where their count came from (``--num-classes``, ``classes.txt``, the masks)."""
    listed = root / CLASSES_FILE
    names = None
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if num_classes is not None and len(names) != num_classes:
            raise DataError(
                f"{listed}: names {len(names)} classes but --num-classes is {num_classes}; make them agree"
            )
    count = num_classes if num_classes is not None else len(names) if names else largest + 1
    source = "--num-classes" if num_classes is not None else CLASSES_FILE if names else "masks"
    if count < 2:
        raise DataError(
            f"{root}: the masks hold {'no class id' if largest < 0 else 'only class 0'}; a segmentation "
            "needs at least 2 classes: check the masks, or give --num-classes / classes.txt"
        )
    if count > IGNORE_INDEX:
        raise DataError(f"{root}: {count} classes; at most {IGNORE_INDEX} fit ids below the ignore value")
    return names or [str(i) for i in range(count)], source


def _check_ids(pairs: list[tuple[Path, Path]], max_ids: list[int], count: int, source: str) -> None:
    """DataError naming the first mask with an id the class count does not cover."""
    for (_, mask), top in zip(pairs, max_ids):
        if top >= count:
            fix = "raise --num-classes" if source == "--num-classes" else f"add the class to {CLASSES_FILE}"
            raise DataError(
                f"{mask}: class id {top}, but {source} gives {count} classes (ids 0..{count - 1}, "
                f"{IGNORE_INDEX} = ignore); fix the mask or {fix}"
            )


def _first_size(pairs: list[tuple[Path, Path]]) -> int:
    """The shorter side of the first image: the default training size."""
    image = pairs[0][0]
    size = _image_size(str(image))
    if size is None:
        raise DataError(f"{image}: cannot be read as an image; replace it or remove it with its mask")
    return min(size)


def _held_out(n: int, fraction: float, seed: int, purpose: str) -> tuple[Tensor, Tensor]:
    """(kept, held out) indices of ``n`` samples: a seeded ``fraction`` held out, at least one kept."""
    return _split(torch.zeros(n, dtype=torch.int64), 1, fraction, seed, purpose)


def load_segmentation(
    spec: str,
    image_size: int | None = None,
    split: Holdout | None = None,
    num_classes: int | None = None,
    device: torch.device | None = None,
) -> SegmentationData:
    """The segmentation folder ``spec`` (module docstring) as in-memory data at ``image_size`` (default:
    the first image's shorter side) on ``device``. Without a val/ (or test/) folder a seeded
    ``split.val_fraction`` of the images is the validation split; ``split.select_fraction`` of the
    training images is held out to choose front points on. Raises DataError."""
    split = split or Holdout()
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"{spec}: not a folder; --task segmentation reads a folder: {_LAYOUT}")
    if (root / "images").is_dir():
        train, val, val_split = _pairs(root), None, "val"
    elif (root / "train").is_dir():
        val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
        train, val = _pairs(root / "train"), None if val_dir is None else _pairs(val_dir)
        val_split = "val" if val_dir is None else val_dir.name
    else:
        raise DataError(f"{root}: not a segmentation folder; {_LAYOUT}")
    size = image_size or _first_size(train)
    every = train + (val or [])
    masks = _masks(every, size)
    names, source = _class_names(root, num_classes, max(masks.max_ids))
    _check_ids(every, masks.max_ids, len(names), source)
    images = _images(every, size)
    train_xy, val_xy, selection = _split_off(root, images, masks.masks, len(train), val is not None, split)
    dev = device or torch.device("cpu")
    return SegmentationData(root.name, train_xy, val_xy, names, dev, selection, val_split, source)


Pair = tuple[Tensor, Tensor]


def _split_off(
    root: Path, images: Tensor, targets: Tensor, n: int, has_val: bool, split: Holdout
) -> tuple[Pair, Pair, Pair | None]:
    """(train, validation, selection) of the first ``n`` (training) ``images`` and ``targets`` and the
    rest (the val/ folder's, where ``has_val``): without one a seeded ``split.val_fraction`` of the
    training images is the validation split; then ``split.select_fraction`` of those left is held out
    for selection (None where too few to hold any out)."""
    x, y = images[:n], targets[:n]
    if not has_val:
        kept, held = _held_out(n, split.val_fraction, split.seed, "split")
        if not held.numel():
            raise DataError(
                f"{root}: {n} images are too few to hold out a validation split; add images or a val/ folder"
            )
        val_xy = x[held], y[held]
        x, y = x[kept], y[kept]
    else:
        val_xy = images[n:], targets[n:]
    selection = None
    if split.select_fraction > 0:
        kept, held = _held_out(x.shape[0], split.select_fraction, split.seed, "selection")
        if held.numel():  # too few images to hold any out: points are chosen on the validation split
            selection = x[held], y[held]
            x, y = x[kept], y[kept]
    return (x, y), val_xy, selection
