"""Image classification: ImageFolder trees, digits or synthetic data; cross-entropy; fronts ranked by top-1."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from pareco_runtime.manifest import Metric

from .. import report
from ..batch_loss import Batch, Loss, cross_entropy
from ..config import TrainConfig, TrainingError
from ..epoch_eval import Score, top1
from ..front_builder import Candidate, Evaluate, classification_evaluators
from .base import Task, probe_output, training_autocast

if TYPE_CHECKING:
    from pareco_runtime.manifest import Front
    from pareco_runtime.models.base import SlimmableNet

    from ..data import Data


def cli_loss(label_smoothing: float) -> Loss:
    """The loss ``pareco train`` minimises: cross-entropy against ``batch[1]`` with ``--label-smoothing``."""

    def loss(output: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(output, batch[1], label_smoothing=label_smoothing)

    return loss


class ClassificationTask(Task):
    """One label per image: ``training.data.load_data`` data, logits out, top-1 (undeclared metric)."""

    name = "classification"
    metric = Metric()
    epoch_key = "top1"
    epoch_label = "top-1"

    def load_data(self, cfg: TrainConfig, cache_dir: str | None, device: torch.device) -> Data:
        from ..data import load_data

        return load_data(
            cfg.data,
            image_size=cfg.image_size,
            seed=cfg.seed,
            select_fraction=cfg.select_fraction,
            cache_dir=cache_dir,
            device=device,
        )

    def front_data(self, spec: str, front: Front, select_fraction: float) -> Data:
        """:func:`training.front_data.load_front_data`: also ImageFolder trees, archives and streamed images
        as the front's preprocessing says, its class names checked."""
        from ..front_data import VAL_FRACTION, load_front_data

        return load_front_data(spec, front, VAL_FRACTION, select_fraction)

    def check_model(self, model: SlimmableNet, data: Data, arch: str) -> None:
        """TrainingError unless ``model`` maps an image to one logit per class (a detector or a segmenter
        named here would otherwise fail mid-training on a shape). One forward in eval mode: no statistic
        or random state changes."""
        c, h, w = data.info.input_size
        want = (1, len(data.info.class_names))
        out = probe_output(model, data.info.input_size)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if shape != want:
            raise TrainingError(
                f"--arch {arch}: its output for a {c}x{h}x{w} input is {shape}, but --task classification "
                f"needs logits of shape {want}; for a detector or a segmenter pass --task detection or "
                "--task segmentation"
            )

    def loss(self, cfg: TrainConfig) -> Loss:
        return cli_loss(cfg.label_smoothing)

    def probe_loss(self) -> Loss:
        return cross_entropy

    def forward(self, net: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The float32 logits of ``batch[0]``."""
        x = batch[0]
        with training_autocast(x):
            return net(x).float()

    def evaluators(self, data: Data) -> tuple[Evaluate, Evaluate | None]:
        return classification_evaluators(data)

    def epoch_figure(self, data: Data) -> Score:
        return top1

    def front_warnings(self, chosen: Sequence[Candidate], data: Data) -> list[str]:
        """Points at chance level and wide MAC gaps (:func:`training.report.front_warnings`)."""
        figures = [SimpleNamespace(macs=c.macs, top1=c.selection["top1"]) for c in chosen]
        return report.front_warnings(figures, len(data.info.class_names))
