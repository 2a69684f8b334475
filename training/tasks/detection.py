"""Object detection: images + YOLO label files, a per-cell detection loss, fronts ranked by mAP@0.5.

The network returns the raw map of :mod:`pareco_runtime.detection`, ``(N, 5 + classes, Gh, Gw)``
(the zoo's ``tiny_detector``, or the user's ``pkg.module:factory`` returning the same). Each object is
assigned to the cell holding its centre (the one listed last in its label file where two centres
share a cell); that cell is positive, every other cell negative. The loss is

    BCE(objectness) averaged over positive cells + over negative cells (each half weighs the same,
    however few objects an image holds)
    + cross-entropy of the class logits, + 5 x L1 of (cx, cy, w, h) + 2 x (1 - GIoU), on positive cells

(the L1 and GIoU weights are DETR's). In-place distillation is off: the default term is KL between
class distributions over channel 1, and this map's channels are not one distribution (objectness and
box offsets sit beside the class logits). Points are scored by COCO mean average precision
(torchmetrics, in percent) at IoU 0.5 (``map50``, the declared metric, higher is better) and averaged
over IoU 0.5:0.95 (``map``), on the boxes :func:`pareco_runtime.detection.detections` decodes, and by
the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pareco_runtime.detection import BOX_CHANNELS, check_raw, corners, decode_boxes, detections
from pareco_runtime.manifest import Metric
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.sources import is_converted

from .. import report
from ..batch_loss import Batch, Loss
from ..config import TrainConfig, TrainingError
from ..data.base import Holdout
from ..data.detection import NO_OBJECT, load_detection
from ..epoch_eval import EVAL_BATCH, Score
from ..front_builder import Candidate, Evaluate
from .base import Task, probe_output, training_autocast

if TYPE_CHECKING:
    from ..data import Data

FIGURES = ("map50", "map", "loss")
"""What a detection front's points record: mAP@0.5 and mAP@0.5:0.95 in percent, and the loss averaged
over batches, weighted by their images."""
ZOO = ("tiny_detector",)
"""The zoo's detectors: the names ``--task detection`` trains without a factory."""
VAL_FRACTION = 0.2
L1_WEIGHT, GIOU_WEIGHT = 5.0, 2.0
# Boxes scoring below this are dropped before mAP: COCO's evaluations keep nearly all (0.001), since
# low-scoring boxes only add to the tail of the precision-recall curve.
EVAL_SCORE_THRESHOLD = 0.001


def assign(targets: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Each object of ``targets`` (``(N, M, 5)``, module :mod:`training.data.detection`) assigned to the
    cell of a ``grid`` (rows, columns) holding its centre: (positive ``(N, Gh, Gw)`` bool, class
    ``(N, Gh, Gw)`` int64, box ``(N, Gh, Gw, 4)`` as cx, cy, w, h). Where centres share a cell, the
    object listed last wins; deterministic on every device (a scatter of maxima)."""
    n, m, _ = targets.shape
    gh, gw = grid
    valid = targets[..., 0] != NO_OBJECT
    cols = (targets[..., 1] * gw).long().clamp(0, gw - 1)
    rows = (targets[..., 2] * gh).long().clamp(0, gh - 1)
    images = torch.arange(n, device=targets.device)[:, None]
    cell = images * (gh * gw) + rows * gw + cols
    order = torch.arange(m, device=targets.device).expand(n, m)
    key = torch.where(valid, order, torch.full_like(order, -1))
    winner = torch.full((n * gh * gw,), -1, dtype=torch.int64, device=targets.device)
    winner = winner.scatter_reduce(0, cell.reshape(-1), key.reshape(-1), "amax")
    positive = winner >= 0
    owner = torch.arange(n * gh * gw, device=targets.device) // (gh * gw)
    chosen = targets[owner, winner.clamp(min=0)]
    return (
        positive.view(n, gh, gw),
        chosen[:, 0].long().view(n, gh, gw),
        chosen[:, 1:].reshape(n, gh, gw, 4),
    )


def detection_loss(label_smoothing: float = 0.0) -> Loss:
    """The loss of the module docstring, of a raw map ``output`` against the targets ``batch[1]``."""
    from torchvision.ops import generalized_box_iou_loss

    def loss(output: Tensor, batch: Batch) -> Tensor:
        positive, classes, boxes = assign(batch[1], (output.shape[2], output.shape[3]))
        n_pos = positive.sum().clamp(min=1)
        bce = F.binary_cross_entropy_with_logits(output[:, 0], positive.float(), reduction="none")
        objectness = (bce * positive).sum() / n_pos + (bce * ~positive).sum() / (~positive).sum().clamp(min=1)
        logits = output[:, BOX_CHANNELS:].permute(0, 2, 3, 1)[positive]
        cls = F.cross_entropy(logits, classes[positive], reduction="sum", label_smoothing=label_smoothing)
        predicted = decode_boxes(output).permute(0, 2, 3, 1)[positive]
        wanted = boxes[positive]
        l1 = (predicted - wanted).abs().sum()
        giou = generalized_box_iou_loss(corners(predicted), corners(wanted), reduction="sum")
        return objectness + (cls + L1_WEIGHT * l1 + GIOU_WEIGHT * giou) / n_pos

    return loss


def truth(targets: Tensor, image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
    """The objects of ``targets`` per image, as torchmetrics reads them: ``boxes`` (x1, y1, x2, y2) in
    pixels of an ``image_size`` (height, width) input and ``labels``."""
    h, w = image_size
    scale = torch.tensor([w, h, w, h], device=targets.device, dtype=targets.dtype)
    found = []
    for image in targets:
        rows = image[image[:, 0] != NO_OBJECT]
        found.append({"boxes": corners(rows[:, 1:]) * scale, "labels": rows[:, 0].long()})
    return found


class BoxTally:
    """Running mean average precision (torchmetrics, IoU 0.5 and 0.5:0.95) and loss over batches."""

    def __init__(self) -> None:
        # torchmetrics costs seconds to import: only a run that scores detection pays it.
        from torchmetrics.detection import MeanAveragePrecision

        self.map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        self.loss = detection_loss()
        self.loss_sum = 0.0
        self.images = 0
        self.objects = 0

    def add(self, raw: Tensor, targets: Tensor, image_size: tuple[int, int]) -> None:
        """Count one batch: its raw map ``raw`` of ``image_size`` (height, width) inputs against its ``targets``."""
        raw = raw.float()
        n = raw.shape[0]
        self.loss_sum += self.loss(raw, (None, targets)).item() * n
        self.images += n
        self.objects += int((targets[..., 0] != NO_OBJECT).sum().item())
        found = detections(raw, image_size, score_threshold=EVAL_SCORE_THRESHOLD)
        self.map.update(_on_cpu(found), _on_cpu(truth(targets, image_size)))

    def result(self) -> dict[str, float]:
        """:data:`FIGURES` of what was counted; ValueError when no object was."""
        if self.objects == 0:
            raise ValueError(
                "evaluation got no objects (every label file is empty); check the validation labels"
            )
        scores = self.map.compute()
        return {
            "map50": 100.0 * float(scores["map_50"]),
            "map": 100.0 * float(scores["map"]),
            "loss": self.loss_sum / self.images,
        }


def _on_cpu(items: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    # pycocotools, which scores the boxes, works on the CPU.
    return [{k: v.cpu() for k, v in item.items()} for item in items]


def detection_evaluate(batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> Evaluate:
    """An :data:`~training.front_builder.Evaluate` of :data:`FIGURES` on the images ``batches()`` yields."""

    @torch.no_grad()
    def evaluate(model: SlimmableNet) -> dict[str, float]:
        tally: BoxTally | None = None
        for x, targets in batches():
            tally = tally or BoxTally()
            tally.add(check_raw(model(x)), targets, (x.shape[2], x.shape[3]))
        if tally is None:
            raise ValueError("evaluation got no images; the data has an empty validation split")
        return tally.result()

    return evaluate


class DetectionTask(Task):
    """Boxes and classes: :mod:`training.data.detection` folders, the per-cell loss, mAP@0.5."""

    name = "detection"
    metric = Metric.declare("map50", True, FIGURES)
    epoch_key = "map50"
    epoch_label = "mAP@0.5"

    def load_data(self, cfg: TrainConfig, cache_dir: str | None, device: torch.device) -> Data:
        """The YOLO folder ``cfg.data`` in memory (no decoded-image cache: it decodes each run)."""
        split = Holdout(VAL_FRACTION, cfg.select_fraction, cfg.seed)
        return load_detection(cfg.data, cfg.image_size, split, cfg.num_classes, device)

    def arch(self, cfg: TrainConfig) -> str:
        """A zoo detector or a converted name as given; TrainingError for any other."""
        if is_converted(cfg.arch) or cfg.arch in ZOO:
            return cfg.arch
        raise TrainingError(
            f"--arch {cfg.arch}: not a detection network; for --task detection choose "
            f"{', '.join(ZOO)}, or your own pkg.module:factory returning the raw map "
            "(N, 5 + classes, grid rows, grid columns)"
        )

    def check_model(self, model: SlimmableNet, data: Data, arch: str) -> None:
        """TrainingError unless ``model`` maps an input to a raw map with 5 + classes channels. One
        forward in eval mode: no statistic or random state changes."""
        try:
            check_raw(probe_output(model, data.info.input_size), len(data.info.class_names))
        except ValueError as exc:
            raise TrainingError(
                f"--arch {arch}: {exc} (see the detection section of docs/training.md)"
            ) from None

    def distill(self) -> bool:
        """Off: the map is not one class distribution per cell (module docstring)."""
        return False

    def loss(self, cfg: TrainConfig) -> Loss:
        return detection_loss(cfg.label_smoothing)

    def probe_loss(self) -> Loss:
        return detection_loss()

    def forward(self, net: torch.nn.Module, batch: Batch) -> Tensor:
        """The float32 raw map of ``batch[0]``."""
        x = batch[0]
        with training_autocast(x):
            return check_raw(net(x)).float()

    def evaluators(self, data: Data) -> tuple[Evaluate, Evaluate | None]:
        evaluate = detection_evaluate(lambda: data.val_batches(EVAL_BATCH))
        if not data.info.num_selection:
            return evaluate, None
        return evaluate, detection_evaluate(lambda: data.selection_batches(EVAL_BATCH))

    def epoch_figure(self, data: Data) -> Score:
        return lambda model, batches: detection_evaluate(lambda: batches)(model)["map50"]

    def record(self, data: Data) -> dict[str, Any]:
        """Where the class count came from: ``--num-classes``, ``classes.txt`` or the labels."""
        return {
            "num_classes": len(data.info.class_names),
            "classes_from": getattr(data, "classes_from", None),
        }

    def front_warnings(self, chosen: Sequence[Candidate], data: Data) -> list[str]:
        """Wide MAC gaps (:func:`training.report.gap_warnings`)."""
        return report.gap_warnings(chosen)
