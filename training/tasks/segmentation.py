"""Semantic segmentation: images + class-id masks, pixel cross-entropy, fronts ranked by mIoU.

The network returns logits ``(N, classes, H, W)`` at the input's resolution, or a dict holding them
under ``"out"`` (torchvision's segmentation models; an ``"aux"`` head is not trained). Pixels whose
mask value is 255 are neither trained on nor scored. In-place distillation is on, as for
classification: each student matches the largest config's per-pixel class distribution (the default
soft-target term of :mod:`training.batch_loss` on 4-D logits: KL averaged over pixels, plus the
teacher's entropy, which has no gradient), on every pixel, since the teacher predicts ignored ones
too. Points are scored by mIoU and pixel accuracy (torchmetrics, in percent) and mean pixel
cross-entropy; the manifest declares ``miou`` as the metric, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pareco_runtime.manifest import Metric
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.sources import is_converted

from .. import report
from ..batch_loss import Batch, Loss
from ..config import TrainConfig, TrainingError
from ..data.base import Holdout
from ..data.segmentation import IGNORE_INDEX, load_segmentation
from ..epoch_eval import EVAL_BATCH, Score
from ..front_builder import Candidate, Evaluate
from .base import Task, probe_output, training_autocast

if TYPE_CHECKING:
    from ..data import Data

FIGURES = ("miou", "pixel_acc", "loss")
"""What a segmentation front's points record: mIoU and pixel accuracy in percent, mean pixel cross-entropy."""
VAL_FRACTION = 0.2


def logits(output: Any) -> Tensor:
    """The logits in a segmentation network's output: the tensor itself, or a dict's ``"out"``;
    ValueError for anything else."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("out"), Tensor):
        return output["out"]
    raise ValueError(
        f"the network returns a {type(output).__name__}; --task segmentation needs logits "
        "(N, classes, H, W), or a dict holding them under 'out'"
    )


def pixel_cross_entropy(label_smoothing: float = 0.0) -> Loss:
    """Mean cross-entropy over the pixels of ``batch[1]`` that are not 255 (0 for a batch without any,
    where PyTorch's mean would be NaN)."""

    def loss(output: Tensor, batch: Batch) -> Tensor:
        masks = batch[1]
        total = F.cross_entropy(
            output, masks, ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing
        )
        return total / (masks != IGNORE_INDEX).sum().clamp(min=1)

    return loss


class PixelTally:
    """Running mIoU and pixel accuracy (torchmetrics) and pixel cross-entropy over batches."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        # torchmetrics costs seconds to import: only a run that scores segmentation pays it.
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        common: dict[str, Any] = {"ignore_index": IGNORE_INDEX, "validate_args": False}
        # Macro mIoU leaves out classes absent from both prediction and masks (torchmetrics' rule).
        self.iou = MulticlassJaccardIndex(num_classes, average="macro", **common).to(device)
        self.acc = MulticlassAccuracy(num_classes, average="micro", **common).to(device)
        self.loss_sum = 0.0
        self.pixels = 0

    def add(self, out: Tensor, masks: Tensor) -> None:
        """Count one batch: its logits ``out`` against its ``masks``."""
        out = out.float()
        predicted = out.argmax(1)
        self.iou.update(predicted, masks)
        self.acc.update(predicted, masks)
        self.loss_sum += F.cross_entropy(out, masks, ignore_index=IGNORE_INDEX, reduction="sum").item()
        self.pixels += int((masks != IGNORE_INDEX).sum().item())

    def result(self) -> dict[str, float]:
        """:data:`FIGURES` of what was counted; ValueError when no labelled pixel was."""
        if self.pixels == 0:
            raise ValueError(
                "evaluation got no labelled pixels (every mask pixel is 255); check the validation masks"
            )
        return {
            "miou": 100.0 * float(self.iou.compute()),
            "pixel_acc": 100.0 * float(self.acc.compute()),
            "loss": self.loss_sum / self.pixels,
        }


def segmentation_evaluate(
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]], num_classes: int
) -> Evaluate:
    """An :data:`~training.front_builder.Evaluate` of :data:`FIGURES` on the images ``batches()`` yields."""

    @torch.no_grad()
    def evaluate(model: SlimmableNet) -> dict[str, float]:
        tally: PixelTally | None = None
        for x, masks in batches():
            tally = tally or PixelTally(num_classes, masks.device)
            tally.add(logits(model(x)), masks)
        if tally is None:
            raise ValueError("evaluation got no images; the data has an empty validation split")
        return tally.result()

    return evaluate


def _segmentation_builders() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models.segmentation))


class SegmentationTask(Task):
    """A class per pixel: :mod:`training.data.segmentation` folders, pixel cross-entropy, mIoU."""

    name = "segmentation"
    metric = Metric.declare("miou", True, FIGURES)
    epoch_key = "miou"
    epoch_label = "mIoU"

    def load_data(self, cfg: TrainConfig, cache_dir: str | None, device: torch.device) -> Data:
        """The segmentation folder ``cfg.data`` in memory (no decoded-image cache: it decodes each run)."""
        split = Holdout(VAL_FRACTION, cfg.select_fraction, cfg.seed)
        return load_segmentation(cfg.data, cfg.image_size, split, cfg.num_classes, device)

    def arch(self, cfg: TrainConfig) -> str:
        """``torchvision:NAME`` for a torchvision segmentation builder's bare name; a converted name as
        given; TrainingError for the classification zoo."""
        if is_converted(cfg.arch):
            return cfg.arch
        builders = _segmentation_builders()
        if cfg.arch in builders:
            return f"torchvision:{cfg.arch}"
        raise TrainingError(
            f"--arch {cfg.arch}: not a segmentation network; for --task segmentation choose one of "
            f"{', '.join(builders)}, or your own pkg.module:factory"
        )

    def check_model(self, model: SlimmableNet, data: Data, arch: str) -> None:
        """TrainingError unless ``model`` maps an input to logits with one channel per class at the
        input's resolution. One forward in eval mode: no statistic or random state changes."""
        c, h, w = data.info.input_size
        want = (1, len(data.info.class_names), h, w)
        try:
            out = logits(probe_output(model, data.info.input_size))
        except ValueError as exc:
            raise TrainingError(f"--arch {arch}: {exc}") from None
        if tuple(out.shape) != want:
            raise TrainingError(
                f"--arch {arch}: its logits for a {c}x{h}x{w} input are {tuple(out.shape)}, but --task "
                f"segmentation needs {want}: one channel per class at the input's resolution "
                "(upsample the head's output, e.g. with F.interpolate)"
            )

    def loss(self, cfg: TrainConfig) -> Loss:
        return pixel_cross_entropy(cfg.label_smoothing)

    def probe_loss(self) -> Loss:
        return pixel_cross_entropy()

    def forward(self, net: torch.nn.Module, batch: Batch) -> Tensor:
        """The float32 logits of ``batch[0]`` (a dict's ``"out"``)."""
        x = batch[0]
        with training_autocast(x):
            return logits(net(x)).float()

    def evaluators(self, data: Data) -> tuple[Evaluate, Evaluate | None]:
        n = len(data.info.class_names)
        evaluate = segmentation_evaluate(lambda: data.val_batches(EVAL_BATCH), n)
        if not data.info.num_selection:
            return evaluate, None
        return evaluate, segmentation_evaluate(lambda: data.selection_batches(EVAL_BATCH), n)

    def epoch_figure(self, data: Data) -> Score:
        n = len(data.info.class_names)
        return lambda model, batches: segmentation_evaluate(lambda: batches, n)(model)["miou"]

    def record(self, data: Data) -> dict[str, Any]:
        """Where the class count came from: ``--num-classes``, ``classes.txt`` or the masks."""
        return {
            "num_classes": len(data.info.class_names),
            "classes_from": getattr(data, "classes_from", None),
        }

    def front_warnings(self, chosen: Sequence[Candidate], data: Data) -> list[str]:
        """Wide MAC gaps (:func:`training.report.gap_warnings`)."""
        return report.gap_warnings(chosen)
