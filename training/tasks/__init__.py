"""The kinds of problem ``pareco train`` trains, each a :class:`Task` the one training loop is given.

A task owns what differs between problems: its data format, the architecture it trains by default,
the loss and the in-place distillation term, the figures a sub-network is scored by (the front's
metric) and the end-of-run warnings. The loop (:mod:`training.loop`), the strategies, checkpoints,
resume and the front builder are the same for all. Modules: ``base`` (:class:`Task`),
``classification`` (ImageFolder data, top-1), ``segmentation`` (images + class-id masks, mIoU), ``detection`` (images + YOLO labels, mAP@0.5).

A trained front is measured again (``pareco eval``, ``calibrate``, ``specialize``, ``export --int8``) by
the task that built it: :func:`front_task` reads it from the training record ``pareco train`` wrote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .segmentation import SegmentationTask

if TYPE_CHECKING:
    from pareco_runtime.manifest import Front

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
    "detection": DetectionTask,
}


def make_task(name: str) -> Task:
    """The task called ``name`` (one of :data:`training.config.TASKS`, checked by ``TrainConfig.validate``)."""
    return TASKS[name]()


def front_task(front: Front, given: str | None = None) -> Task:
    """The task that measures ``front`` again: ``given`` (a command's ``--task``), else the one its
    training recorded (``pareco train``'s ``training.extra.config.task``), else classification for a
    front ranked by top-1 (one trained before tasks existed records none).

    ValueError (one line) for an unknown ``given``, one that differs from the recorded task, a front
    ranked by a metric of its own that records no task (built by ``training.build_front`` from the
    user's own loop) when none is given, and a task whose figures are not the ones the front declares.
    """
    config = front.training.extra.get("config")
    recorded = config.get("task") if isinstance(config, dict) else None
    if given is not None and given not in TASKS:
        raise ValueError(f"--task {given}: not a task; choose one of {', '.join(TASKS)}")
    if given is not None and recorded is not None and given != recorded:
        raise ValueError(
            f"{front.path}: trained by --task {recorded}, not {given}; leave --task out or pass --task {recorded}"
        )
    name = given or recorded or (None if front.metric.declared else "classification")
    if name is None:
        raise ValueError(
            f"{front.path}: the front is ranked by {front.metric.rank} and does not record the task that "
            f"built it; pass --task {' or --task '.join(n for n in TASKS if n != 'classification')} where "
            "its data is such a folder, or re-measure it in Python with "
            "training.evaluate_front(manifest, evaluate)"
        )
    task = make_task(name)
    if task.metric != front.metric:
        ranked = (
            f"{front.metric.rank} ({', '.join(front.metric.names)})" if front.metric.declared else "top-1"
        )
        measures = f"{task.metric.rank} ({', '.join(task.metric.names)})" if task.metric.declared else "top-1"
        raise ValueError(
            f"{front.path}: the front is ranked by {ranked}, but --task {name} measures {measures}; "
            "re-measure it in Python with training.evaluate_front(manifest, evaluate)"
        )
    return task


__all__ = [
    "TASKS",
    "ClassificationTask",
    "DetectionTask",
    "SegmentationTask",
    "Task",
    "front_task",
    "make_task",
]
