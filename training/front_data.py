"""Data for a front that is already trained: images prepared as its network expects them.

``pareco eval`` and ``pareco calibrate`` take the data forms ``pareco train --data`` takes, but the
images must reach the network as they did in training: at the manifest's input size, resized as its
``dataset.preprocess`` says, normalised with the manifest's mean and std (not the new images' own),
with its class names in its order. The seeded hold-outs (a tree without a test/ or val/ folder,
digits, synthetic) are drawn with the front's training seed, so the same data gives the same splits
as training did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pareco_runtime.manifest import Front
from pareco_runtime.preprocess import Preprocess

from .data import Data, DataError, is_builtin, load_data

if TYPE_CHECKING:
    from .tasks import Task

# Images per evaluation batch, as the trainer evaluates its candidates (front_builder).
EVAL_BATCH = 500
# The share of images held out as validation where the data has no test/ or val/ folder: load_data's
# default, which training uses (no flag changes it).
VAL_FRACTION = 0.2
_SHOWN_NAMES = 6


def load_front_data(
    spec: str, front: Front, val_fraction: float, select_fraction: float, cache_dir: str | None = None
) -> Data:
    """``spec`` (what ``pareco train --data`` takes) loaded for ``front``'s network, on the CPU.

    Images are made the manifest's input size, decoded into memory or streamed as its preprocessing
    says (a shorter-side resize is how streamed images were evaluated), normalised with its mean and
    std; ``val_fraction`` / ``select_fraction`` are held out (where the data has no validation
    split) with the front's training seed. Refused with a one-line :class:`DataError`: classes that
    differ from the manifest's (both named), a non-square input size, a resize other than the
    manifest's.
    """
    dataset = front.dataset
    wanted = Preprocess.from_dataset(dataset.to_dict())
    data = load_data(
        spec,
        image_size=square_size(front),
        seed=front.training.seed,
        val_fraction=val_fraction,
        select_fraction=select_fraction,
        cache_dir=cache_dir,
        device="cpu",
        mode="stream" if wanted.mode == "shorter_side" else "memory",
    )
    check_classes(spec, data.info.class_names, front)
    data.renormalise(dataset.mean, dataset.std)
    info = data.info
    made = Preprocess.from_dataset(
        {"input_size": info.input_size, "mean": info.mean, "std": info.std, "preprocess": info.preprocess}
    )
    if made != wanted:
        raise DataError(
            f"{spec}: its images would be prepared as {made.to_dict()}, but the front's network was "
            f"evaluated on {wanted.to_dict()} ({front.path}); pass data in the form it was trained on"
        )
    return data


def square_size(front: Front) -> int:
    """The side of ``front``'s square input; DataError (one line) for a non-square one, which pareco's
    data loaders cannot make."""
    _, height, width = front.dataset.input_size
    if height != width:
        raise DataError(
            f"{front.path}: input size {height}x{width} is not square, and pareco's data loaders make "
            "square images; evaluate it with your own loader"
        )
    return int(height)


def check_classes(spec: str, class_names: Sequence[str], front: Front) -> None:
    """Refuse data whose classes are not the manifest's (the same names in the same order), naming both;
    a manifest without names needs the number of classes its network outputs, where it records one."""
    expected = front.dataset.class_names
    if expected and list(class_names) != list(expected):
        raise DataError(
            f"{spec}: its classes ({_names(class_names)}) do not match those of {front.path} "
            f"({_names(expected)}); pass data of the classes the front was trained on"
        )
    outputs = front.architecture.kwargs.get("num_classes")
    if not expected and isinstance(outputs, int) and len(class_names) != outputs:
        raise DataError(
            f"{spec}: {len(class_names)} classes, but the front's network outputs {outputs} "
            f"({front.path}); pass data of the classes the front was trained on"
        )


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f", ... {len(names)} in all" if len(names) > _SHOWN_NAMES else "")


@dataclass
class EvalSet:
    """The test images of ``pareco eval``: ``name`` (what to call the evaluation by default:
    ``<data name>-<split>``), ``split`` (the manifest's record of them: ``name``, ``images``, ``data``
    and for a seeded hold-out ``fraction`` and ``seed``), ``text`` (which images, for people) and
    ``batches`` (every one of them once, normalised for the front); ``data``: what they were loaded from,
    whose ``calib_batches`` are the training images (every image, for a tree without test/ or val/)."""

    name: str
    split: dict[str, Any]
    text: str
    batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]
    data: Data


def evaluation_set(spec: str, front: Front, cache_dir: str | None = None) -> EvalSet:
    """The images of ``spec`` to evaluate ``front`` on: a tree's (or archive's) test/ or val/ folder where it
    has one, else every image of it (a plain ``<class>/*`` tree is a test set); for digits and
    synthetic data, the validation images held out with the front's training seed, as training held
    them out. Loaded by :func:`load_front_data`."""
    builtin = is_builtin(spec)
    data = load_front_data(spec, front, VAL_FRACTION if builtin else 0.0, 0.0, cache_dir)
    info, seed = data.info, front.training.seed
    if builtin:
        return EvalSet(
            f"{info.name}-{info.val_split}",
            {"name": info.val_split, "images": info.num_val, "data": spec, "fraction": VAL_FRACTION,
             "seed": seed},
            f"{info.val_split}: {info.num_val} images of {spec} held out with the front's training seed "
            f"({seed}), as training held them out",
            lambda: data.val_batches(EVAL_BATCH),
            data,
        )  # fmt: skip
    if info.num_val:  # held out nothing, so these are the test/ or val/ folder's
        return EvalSet(
            f"{info.name}-{info.val_split}",
            {"name": info.val_split, "images": info.num_val, "data": spec},
            f"{info.val_split}: the {info.num_val} images of the {info.val_split}/ folder of {spec}",
            lambda: data.val_batches(EVAL_BATCH),
            data,
        )
    # No test/ or val/ folder: every image, in the seeded order that calibration batches are drawn in,
    # which with enough batches covers each image once.
    covering = math.ceil(info.num_train / EVAL_BATCH)
    return EvalSet(
        f"{info.name}-all",
        {"name": "all", "images": info.num_train, "data": spec},
        f"all: every one of the {info.num_train} images of {spec} (it has no test/ or val/ folder)",
        lambda: data.calib_batches(EVAL_BATCH, covering, seed),
        data,
    )


def task_evaluation_set(task: Task, spec: str, front: Front) -> EvalSet:
    """The images of ``spec`` (a folder ``pareco train --task`` reads) to evaluate ``front`` on, loaded by
    ``task`` (:meth:`~training.tasks.Task.front_data`): its val/ (or test/) folder's images where it has
    one, else the validation images held out with the front's training seed, as training held them out."""
    data = task.front_data(spec, front, 0.0)
    info, seed = data.info, front.training.seed
    return EvalSet(
        f"{info.name}-{info.val_split}",
        {"name": info.val_split, "images": info.num_val, "data": spec},
        f"{info.val_split}: {info.num_val} images of {spec} (its {info.val_split}/ folder, or held out with "
        f"the front's training seed ({seed}) as training held them out)",
        lambda: data.val_batches(EVAL_BATCH),
        data,
    )
