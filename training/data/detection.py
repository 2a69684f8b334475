"""Detection data: a folder of images and YOLO label files, decoded into memory, flipped with their boxes.

Two layouts (``--task detection --data DATA``), the one YOLO tools write::

    DATA/images/NAME.jpg|.png + DATA/labels/NAME.txt          a seeded share held out as validation
    DATA/train/{images,labels}/ + DATA/val/{images,labels}/   (or test/ for val/)
    DATA/classes.txt                                           optional: one class name per line, id order

A label file holds one object per line, ``class cx cy w h``: an integer class id, then the box's centre
and size as fractions of the image's width and height (in [0, 1], width and height above 0). An image
without a label file, or with an empty one, shows no object. The class count is ``num_classes`` where
given, else the lines of ``classes.txt``, else the largest id in the labels plus one. Images are
resized to ``image_size`` squares (the boxes, being fractions, stay as they are) and kept in memory; a
training batch is flipped left-right image by image, boxes with it, from a generator seeded by (seed,
epoch, rank), so a resumed run repeats it bit for bit. No crop: it would cut boxes. Any bad file is a
:class:`DataError` naming it (and, for a label, the line) and what to do.

A batch's targets are float32 ``(N, M, 5)``: per image up to ``M`` rows ``(class, cx, cy, w, h)``, ``M``
the most objects any image of the data holds; rows past an image's objects have class -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import DataError, Holdout
from .decode import _decode_many, _image_size
from .memory import TensorData
from .segmentation import CLASSES_FILE, IMAGE_SUFFIXES, _split_off

NO_OBJECT = -1
"""The class of a target row that holds no object (padding)."""
_LAYOUT = "lay it out as images/ + labels/, or train/{images,labels} + val/{images,labels}"
_FIELDS = ("cx", "cy", "w", "h")


@dataclass(frozen=True)
class _Box:
    """One label line: its class id, box (cx, cy, w, h) and where it was read (for errors)."""

    cls: int
    box: tuple[float, float, float, float]
    where: str


class DetectionData(TensorData):
    """Images with their boxes, held in memory; batches are ``(images, targets)``, targets float32
    ``(N, M, 5)`` (module docstring). Augmentation flips images left-right, boxes alike.
    ``classes_from`` says where the class count came from."""

    target_dtype = torch.float32
    batch_target_dtype = torch.float32

    def __init__(
        self,
        name: str,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        class_names: list[str],
        device: torch.device,
        selection: tuple[Tensor, Tensor] | None = None,
        val_split: str = "val",
        classes_from: str = "labels",
    ) -> None:
        super().__init__(name, train, val, class_names, device, selection, val_split)
        self.classes_from = classes_from

    def _augment(self, x: Tensor, y: Tensor, offsets: Tensor, flips: Tensor) -> tuple[Tensor, Tensor]:
        """Images flipped left-right where ``flips``, their boxes' centres mirrored (``offsets`` unused)."""
        images = torch.where(flips[:, None, None, None], x.flip(-1), x)
        mirror = flips[:, None] & (y[..., 0] != NO_OBJECT)
        targets = y.clone()
        targets[..., 1] = torch.where(mirror, 1.0 - y[..., 1], y[..., 1])
        return images, targets


def _bad(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what}; fix the line (a label line is: class cx cy w h)")


def _parse_line(text: str, where: str) -> _Box:
    """One label line as a :class:`_Box`; DataError naming ``where`` (file:line) and the fault."""
    fields = text.split()
    if len(fields) != 5:
        raise _bad(where, f"{len(fields)} fields, not 5")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not _is_number(f))
        raise _bad(where, f"'{bad}' is not a number") from None
    for name, field, value in zip(("class id", *_FIELDS), fields, values):
        if not math.isfinite(value):
            raise _bad(where, f"{name} is {field}, not a finite number")
    cls = values[0]
    if cls < 0 or cls != int(cls):
        raise _bad(where, f"class id {fields[0]} is not a class: ids are whole numbers from 0")
    for name, value in zip(_FIELDS, values[1:]):
        if not 0.0 <= value <= 1.0:
            raise _bad(
                where, f"{name} {value:g} is outside [0, 1] (fractions of the image's width and height)"
            )
    for name, value in zip(("width", "height"), values[3:]):
        if value <= 0:
            raise _bad(where, f"box {name} {value:g} is not above 0")
    cx, cy, w, h = values[1:]
    return _Box(int(cls), (cx, cy, w, h), where)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_labels(path: Path) -> list[_Box]:
    """The objects of label file ``path`` (none where it is absent or empty)."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read the labels ({type(exc).__name__}); save it as UTF-8 text"
        ) from None
    return [
        _parse_line(line, f"{path}:{n}") for n, line in enumerate(text.splitlines(), start=1) if line.strip()
    ]


def _samples(folder: Path) -> list[tuple[Path, list[_Box]]]:
    """``(image, objects)`` of ``folder/images`` and ``folder/labels``, sorted by image name."""
    images_dir, labels_dir = folder / "images", folder / "labels"
    if not images_dir.is_dir():
        raise DataError(f"{folder}: no images/ folder; {_LAYOUT}")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{images_dir}: no .jpg or .png images; put the images there")
    stems: dict[str, Path] = {}
    samples = []
    for image in images:
        if image.stem in stems:
            raise DataError(
                f"{image}: shares its label file {image.stem}.txt with {stems[image.stem]}; rename one of them"
            )
        stems[image.stem] = image
        samples.append((image, _read_labels(labels_dir / f"{image.stem}.txt")))
    return samples


def _class_names(root: Path, num_classes: int | None, boxes: list[_Box]) -> tuple[list[str], str]:
    """The class names and where their count came from (``--num-classes``, ``classes.txt``, the labels);
    DataError naming the first label line whose id the count does not cover."""
    listed = root / CLASSES_FILE
    names = None
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if num_classes is not None and len(names) != num_classes:
            raise DataError(
                f"{listed}: names {len(names)} classes but --num-classes is {num_classes}; make them agree"
            )
    largest = max((b.cls for b in boxes), default=-1)
    count = num_classes if num_classes is not None else len(names) if names else largest + 1
    source = "--num-classes" if num_classes is not None else CLASSES_FILE if names else "labels"
    if largest < 0:
        raise DataError(f"{root}: no label file holds an object; put one 'class cx cy w h' line per object")
    for box in boxes:
        if box.cls >= count:
            fix = "raise --num-classes" if source == "--num-classes" else f"add the class to {CLASSES_FILE}"
            raise DataError(
                f"{box.where}: class id {box.cls}, but {source} gives {count} classes (ids 0..{count - 1}); "
                f"fix the line or {fix}"
            )
    return names or [str(i) for i in range(count)], source


def _targets(samples: list[tuple[Path, list[_Box]]], rows: int) -> Tensor:
    """The objects of ``samples`` as float32 ``(N, rows, 5)``, rows past an image's objects of class -1."""
    targets = torch.zeros(len(samples), rows, 5)
    targets[..., 0] = NO_OBJECT
    for i, (_, boxes) in enumerate(samples):
        for j, box in enumerate(boxes):
            targets[i, j] = torch.tensor((box.cls, *box.box))
    return targets


def _images(samples: list[tuple[Path, list[_Box]]], size: int) -> Tensor:
    """The images of ``samples`` as uint8 ``(N, 3, S, S)``; DataError naming the first unreadable one."""
    arrays = _decode_many(((str(image), str(image)) for image, _ in samples), size)
    decoded = []
    for image, _ in samples:
        array = arrays[str(image)]
        if array is None:
            raise DataError(f"{image}: cannot be read as an image; replace it or remove it and its labels")
        decoded.append(array)
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()


def load_detection(
    spec: str,
    image_size: int | None = None,
    split: Holdout | None = None,
    num_classes: int | None = None,
    device: torch.device | None = None,
) -> DetectionData:
    """The YOLO folder ``spec`` (module docstring) as in-memory data at ``image_size`` (default: the
    first image's shorter side) on ``device``. Without a val/ (or test/) folder a seeded
    ``split.val_fraction`` of the images is the validation split; ``split.select_fraction`` of the
    training images is held out to choose front points on. Raises DataError."""
    split = split or Holdout()
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"{spec}: not a folder; --task detection reads a folder: {_LAYOUT}")
    if (root / "images").is_dir():
        train, val, val_split = _samples(root), None, "val"
    elif (root / "train").is_dir():
        val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
        train, val = _samples(root / "train"), None if val_dir is None else _samples(val_dir)
        val_split = "val" if val_dir is None else val_dir.name
    else:
        raise DataError(f"{root}: not a detection folder; {_LAYOUT}")
    every = train + (val or [])
    names, source = _class_names(root, num_classes, [b for _, boxes in every for b in boxes])
    size = image_size or _first_size(train[0][0])
    images = _images(every, size)
    targets = _targets(every, max(len(boxes) for _, boxes in every))
    train_xy, val_xy, selection = _split_off(root, images, targets, len(train), val is not None, split)
    _require_objects(root, val_xy[1], f"the {val_split} split", "add labelled images or a val/ folder")
    if selection is not None:
        _require_objects(
            root, selection[1], "the selection split", "add labelled images or give --select-fraction 0"
        )
    dev = device or torch.device("cpu")
    return DetectionData(root.name, train_xy, val_xy, names, dev, selection, val_split, source)


def _require_objects(root: Path, targets: Tensor, split: str, fix: str) -> None:
    """DataError where the images of ``split`` hold no object: mAP cannot be measured on them."""
    if not (targets[..., 0] != NO_OBJECT).any():
        raise DataError(
            f"{root}: {split}'s {targets.shape[0]} images hold no object, so mAP cannot be measured; {fix}"
        )


def _first_size(image: Path) -> int:
    """The shorter side of ``image``: the default training size."""
    size = _image_size(str(image))
    if size is None:
        raise DataError(f"{image}: cannot be read as an image; replace it or remove it and its labels")
    return min(size)
