"""The kinds of problem ``pareco train`` trains, each a :class:`Task` the one training loop is given.

A task owns what differs between problems: its data format, the architecture it trains by default,
the loss and the in-place distillation term, the figures a sub-network is scored by (the front's
metric) and the end-of-run warnings. The loop (:mod:`training.loop`), the strategies, checkpoints,
resume and the front builder are the same for all. Modules: ``base`` (:class:`Task`),
``classification`` (ImageFolder data, top-1), ``segmentation`` (images + class-id masks, mIoU), ``detection`` (images + YOLO labels, mAP@0.5).
"""

from __future__ import annotations

from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
    "detection": DetectionTask,
}


def make_task(name: str) -> Task:
    """The task called ``name`` (one of :data:`training.config.TASKS`, checked by ``TrainConfig.validate``)."""
    return TASKS[name]()


__all__ = ["TASKS", "ClassificationTask", "DetectionTask", "SegmentationTask", "Task", "make_task"]
