"""Training data: embedded digits, synthetic data, ImageFolder trees (directories or tar archives), segmentation
folders (images + class-id masks) and detection folders (images + YOLO label files).

Small images are decoded once into a uint8 tensor cache (safetensors) and kept on the training device, with
augmentation done as batched tensor ops; large images stream from a directory through a DataLoader. Every
batch order and augmentation is a pure function of (seed, epoch, rank, world_size), so a run resumed at an
epoch boundary repeats the original bit for bit.

Modules: ``load`` (:func:`load_data`), ``base`` (:class:`Data`, :class:`DataInfo`, :class:`DataError`),
``memory`` (:class:`TensorData`), ``stream`` (:class:`StreamData`), ``builtin`` (digits, synthetic),
``folder`` (ImageFolder layouts of directories and archives), ``decode`` (images to arrays), ``cache``
(decoded images on disk), ``order`` (seeded batch orders and the hold-out split), ``segmentation``
(:class:`~training.data.segmentation.SegmentationData`, :func:`~training.data.segmentation.load_segmentation`),
``detection`` (:class:`~training.data.detection.DetectionData`, :func:`~training.data.detection.load_detection`).
"""

from .base import Data, DataError, DataInfo
from .load import SMALL_IMAGE_MAX, is_builtin, load_data
from .memory import TensorData
from .stream import IMAGENET_MEAN, IMAGENET_STD, StreamData

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SMALL_IMAGE_MAX",
    "Data",
    "DataError",
    "DataInfo",
    "StreamData",
    "TensorData",
    "is_builtin",
    "load_data",
]
