"""Which sub-networks a training step trains: Independent and Slim (PareCO and TwoStage build on these).

A strategy decides, at every step, the list of configs whose losses are averaged into one update
(the first is the teacher when in-place distillation is on), and, after training, the candidate
configs that are calibrated, evaluated and sorted into the front; :class:`training.trainer.Trainer`
runs those configs with the user's loss. Its random state lives in its own generator and goes into
the checkpoint, so a resumed run draws the same configs, on every rank alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from pareco_runtime.models.base import SlimmableNet

from .batch_loss import Measure, measure_losses
from .search_cost import LatencyCost, MacCost


def widths_spread_over_macs(model: SlimmableNet, n: int) -> list[float]:
    """``n`` uniform widths whose MACs are evenly spaced from the smallest to the largest model."""
    return MacCost(model).widths_spread(n)


class Strategy(ABC):
    """Base class: owns a seeded generator; subclasses choose configs per step and candidates."""

    name = "base"
    distill = False

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.model: SlimmableNet | None = None

    def attach_data(self, data: Any) -> None:  # noqa: B027  # an optional hook, not an abstract method
        """Optional hook, called once with the training data before :meth:`setup`; the base keeps
        nothing. Strategies that measure configs after training (TwoStage's search, PareCO's final
        re-measurement) override it to keep the data."""

    def setup(self, model: SlimmableNet, total_steps: int, measure: Measure | None = None) -> None:
        """Called once before the first step (also after a resume, before loading state), by
        :class:`training.trainer.Trainer`. ``measure(configs, batch)`` gives each config's loss on a
        batch, model untouched (default: :func:`training.batch_loss.measure_losses`, cross-entropy)."""
        self.model = model
        self.total_steps = total_steps
        self.measure: Measure = measure or partial(measure_losses, model)

    @abstractmethod
    def step_configs(self, step: int, model: SlimmableNet, batch: Any) -> list[list[float]]:
        """Configs to train at ``step`` on ``batch``; the first is the teacher when ``distill`` is set."""

    @abstractmethod
    def candidates(self, model: SlimmableNet, probe: Any = None) -> list[list[float]]:
        """Configs to calibrate and evaluate after training; strategies that measure configs do it on
        ``probe`` (a batch) when given."""

    def watched_configs(self, model: SlimmableNet) -> dict[str, list[float]]:
        """The sub-networks whose top-1 is shown after each epoch, by name: the largest and the smallest."""
        return {"largest": model.space.uniform(model.space.high), "smallest": model.space.smallest()}

    def record(self) -> dict[str, Any]:
        """Figures for the manifest's training record."""
        return {}

    def latency_cost(self) -> LatencyCost | None:
        """The device latency the candidates were searched on (``--cost latency@FILE``), by which the
        front is then chosen and its points' latencies predicted; None when the search's cost is MACs."""
        return None

    def progress(self) -> str:
        """A short text for the progress bar (e.g. the history size)."""
        return ""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (tensors and JSON-able values)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def _uniform(self) -> float:
        assert self.model is not None
        s = self.model.space
        return s.low + (s.high - s.low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))


class Independent(Strategy):
    """One fixed config trained alone (the baseline of a zoo of separately trained models)."""

    name = "independent"

    def __init__(
        self,
        seed: int,
        width: float = 1.0,
        alpha: Sequence[float] | None = None,
        torchvision_widths: bool = False,
    ) -> None:
        super().__init__(seed)
        self.width = width
        self.alpha = None if alpha is None else [float(a) for a in alpha]
        self.torchvision_widths = torchvision_widths

    def setup(self, model: SlimmableNet, total_steps: int, measure: Measure | None = None) -> None:
        super().setup(model, total_steps, measure)
        self.config(
            model
        )  # an arch without torchvision widths, or a width outside them, fails before training

    def config(self, model: SlimmableNet) -> list[float]:
        """The config this run trains: ``alpha``, else torchvision's network at ``width`` with
        ``torchvision_widths``, else the uniform ``width``."""
        if self.alpha is not None:
            return list(self.alpha)
        if self.torchvision_widths:
            return model.torchvision_config(self.width)
        return model.space.uniform(self.width)

    def step_configs(self, step, model, batch):
        return [self.config(model)]

    def candidates(self, model, probe=None):
        return [self.config(model)]

    def watched_configs(self, model):
        return {"trained": self.config(model)}

    def record(self):
        return {"alpha": self.config(self.model) if self.model else self.alpha}


class Slim(Strategy):
    """Universally slimmable training: the sandwich rule with in-place distillation (Yu & Huang 2019).

    Each step trains the largest config (on the labels), the smallest and ``samples`` random
    uniform widths (on the largest one's soft predictions). Candidates: ``num_candidates``
    uniform widths spread evenly over MACs; with ``torchvision_widths``, torchvision's networks at
    those width multipliers (``model.torchvision_config``) wherever they are configs of the space.
    """

    name = "slim"
    distill = True

    def __init__(
        self, seed: int, samples: int = 2, num_candidates: int = 40, torchvision_widths: bool = False
    ) -> None:
        super().__init__(seed)
        self.samples = samples
        self.num_candidates = num_candidates
        self.torchvision_widths = torchvision_widths

    def setup(self, model: SlimmableNet, total_steps: int, measure: Measure | None = None) -> None:
        super().setup(model, total_steps, measure)
        if self.torchvision_widths:
            model.torchvision_config(1.0)  # an arch without them fails before training, not after

    def step_configs(self, step, model, batch):
        s = model.space
        return (
            [s.uniform(s.high)] + [s.uniform(self._uniform()) for _ in range(self.samples)] + [s.smallest()]
        )

    def candidates(self, model, probe=None):
        widths = widths_spread_over_macs(model, self.num_candidates)
        if not self.torchvision_widths:
            return [model.space.uniform(w) for w in widths]
        configs = []
        for w in widths:
            try:
                configs.append(model.torchvision_config(w))
            except ValueError:
                continue  # below the space's floor at this width_mult: not one of torchvision's here
        return configs

    def record(self):
        return {"samples_per_step": self.samples, "candidates": self.num_candidates}
