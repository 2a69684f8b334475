"""What a kind of problem gives the training loop: :class:`Task`."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pareco_runtime.manifest import DatasetSpec, Front, Metric
from pareco_runtime.models.base import SlimmableNet

from ..batch_loss import Batch, Distill, Loss, Output
from ..config import TrainConfig
from ..epoch_eval import Score
from ..front_builder import Candidate, Evaluate, classification_dataset, split_record

if TYPE_CHECKING:
    from ..data import Data  # torchvision's transforms: imported where data is loaded


def probe_output(model: torch.nn.Module, input_size: Sequence[int]) -> Any:
    """``model``'s output for one zero input of ``input_size``, in eval mode without autograd, its
    training mode restored: a check before training that changes no statistic or random state."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)


def training_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for a training forward on a GPU; none on CPU or for PareCO's loss measurements
    (no gradient), which stay float32."""
    if x.is_cuda and torch.is_grad_enabled():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Task(ABC):
    """The problem-specific parts of a ``pareco train`` run, given to the one training loop.

    ``metric``: what the front is ranked by; ``epoch_key`` / ``epoch_label``: the figure of the
    after-epoch check (``epoch_figure``) as logged and as shown.
    """

    name: ClassVar[str]
    metric: ClassVar[Metric]
    epoch_key: ClassVar[str]
    epoch_label: ClassVar[str]

    @abstractmethod
    def load_data(self, cfg: TrainConfig, cache_dir: str | None, device: torch.device) -> Data:
        """``cfg.data`` loaded and checked (DataError naming the file and what to do)."""

    def front_data(self, spec: str, front: Front, select_fraction: float) -> Data:
        """``spec`` (what ``pareco train --task NAME --data`` takes) loaded for the trained ``front`` on the
        CPU, split as its training split it (the validation split, then ``select_fraction`` of the
        training images, held out with its training seed), at its input size, with its number of
        classes, normalised with its mean and std. DataError (one line) for a non-square input size or
        class names (a ``classes.txt``) other than the front's."""
        from ..front_data import check_classes, square_size

        names = front.dataset.class_names
        cfg = TrainConfig(
            task=self.name,
            data=spec,
            image_size=square_size(front),
            seed=front.training.seed,
            select_fraction=select_fraction,
            num_classes=len(names) or None,
        )
        data = self.load_data(cfg, None, torch.device("cpu"))
        if getattr(data, "classes_from", None) == "classes.txt":  # otherwise the names are the ids
            check_classes(spec, data.info.class_names, front)
        data.renormalise(front.dataset.mean, front.dataset.std)
        return data

    def arch(self, cfg: TrainConfig) -> str:
        """The architecture name to build for ``cfg.arch`` (TrainingError where the task cannot train it)."""
        return cfg.arch

    def check_model(self, model: SlimmableNet, data: Data, arch: str) -> None:  # noqa: B027  # optional
        """TrainingError where the built ``model`` cannot learn this task from ``data``; the base checks
        nothing."""

    def distill(self) -> bool | Distill:
        """The in-place distillation term: True is :func:`training.batch_loss.soft_target_distill` on
        the forward's logits (KL to the largest config's softmax, per pixel for 4-D logits)."""
        return True

    @abstractmethod
    def loss(self, cfg: TrainConfig) -> Loss:
        """The loss the run minimises, ``loss(forward output, batch)``."""

    @abstractmethod
    def probe_loss(self) -> Loss:
        """The loss PareCO and TwoStage measure configs by."""

    @abstractmethod
    def forward(self, net: torch.nn.Module, batch: Batch) -> Output:
        """The float32 output the loss and distillation take, from ``batch[0]``; training forwards on a
        GPU run under bf16 autocast (:func:`training_autocast`)."""

    @abstractmethod
    def evaluators(self, data: Data) -> tuple[Evaluate, Evaluate | None]:
        """(evaluate, selection_evaluate) on ``data``'s validation and selection splits (None: no
        selection split), each returning the figures named by ``metric``."""

    @abstractmethod
    def epoch_figure(self, data: Data) -> Score:
        """The figure shown after each epoch, of a model at a config on some batches."""

    def dataset(self, data: Data, cfg: TrainConfig) -> DatasetSpec:
        """The manifest's dataset record: input size, normalisation, class names and splits."""
        return classification_dataset(data.info, split_record(data.info, cfg.select_fraction, cfg.seed))

    def record(self, data: Data) -> dict[str, Any]:
        """Figures of the data for the manifest's training record (``extra``)."""
        return {}

    @abstractmethod
    def front_warnings(self, chosen: Sequence[Candidate], data: Data) -> list[str]:
        """One line per problem of the front of ``chosen`` candidates (cheapest first), with what to do."""
