"""Train a slimmable network from your own training loop: Slim, PareCO, TwoStage or Independent.

A :class:`Trainer` joins a strategy (which sub-networks a step trains, :mod:`training.strategies`,
:mod:`training.pareco`) to your model and your loss. :meth:`Trainer.train_step` runs, for one batch,
the forward and backward of every config the strategy picks, with in-place distillation from the
largest, and leaves the optimiser to you, so your own optimiser, schedule, AMP, gradient
accumulation and DistributedDataParallel work as in any PyTorch loop::

    from training import PareCO, Slim, Trainer

    model = make_slimmable(torchvision.models.resnet18(num_classes=10), torch.zeros(1, 3, 32, 32))
    trainer = Trainer(model, PareCO(seed=0), loss=my_loss, total_steps=len(loader) * epochs)
    for step, batch in enumerate(loader):
        model.train()
        trainer.train_step(batch, backward=lambda l: scaler.scale(l / accum).backward())
        if (step + 1) % accum == 0:
            scaler.step(opt); scaler.update(); opt.zero_grad()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "trainer": trainer.state_dict()}, path)
    configs = trainer.candidates(probe=held_out_batch)  # the configs to calibrate and evaluate

The batch and the model's output may have any structure (a tensor, a tuple, a dict): ``forward(net,
batch)`` makes the output (default ``net(batch[0])``), ``loss(output, batch)`` a scalar tensor
(default cross-entropy against ``batch[1]``). In-place distillation is KL on logits by default,
your ``distill(student_out, teacher_out)`` for other outputs, or off (``distill=False``).

Under DistributedDataParallel, pass the wrapper: forwards run through it, gradients are all-reduced
once per step (on the last config's backward), every rank draws the same configs from the strategy's
seeded generator, and PareCO's BO runs on rank 0 with its configs broadcast. :meth:`Trainer.state_dict`
beside the model's and optimiser's resumes a run bit for bit.

``pareco train`` runs this same API: its step is a :meth:`Trainer.train_step` between
``opt.zero_grad()`` and ``opt.step()``, and its fronts are the same, bit for bit, as before the library.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pareco_runtime.models.base import SlimmableNet

from .batch_loss import (
    Backward,
    Batch,
    Distill,
    Forward,
    Loss,
    cross_entropy,
    first_input,
    map_tensors,
    measure_losses,
    soft_target_distill,
)
from .config import DISTILL_WARMUP
from .strategies import Strategy


@dataclass
class StepResult:
    """What one :meth:`Trainer.train_step` trained: the configs (the teacher first when distilling) and
    each one's ``loss`` (detached, before any distillation term is mixed in)."""

    configs: list[list[float]]
    losses: list[Tensor]


def _slimmable(model: nn.Module) -> SlimmableNet:
    """The SlimmableNet inside ``model`` (itself, or the module a DistributedDataParallel wraps)."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, SlimmableNet):
        raise TypeError(
            f"Trainer: model is a {type(inner).__name__}, not a SlimmableNet; build one from the zoo "
            "(pareco_runtime.build_model) or convert yours with pareco_runtime.make_slimmable(model, example)"
        )
    return inner


class Trainer:
    """Trains ``model`` (a SlimmableNet, or DistributedDataParallel around one) with ``strategy``.

    ``loss(output, batch)`` is minimised on every config the strategy picks, and PareCO's and
    TwoStage's BO measure configs with ``probe_loss`` (default: ``loss``) on probe batches.
    ``forward(net, batch)`` makes the output; it runs the DDP wrapper when given one, and may enter
    autocast. ``distill``: True is :func:`soft_target_distill` (logits), a callable
    ``distill(student_out, teacher_out)`` replaces it, False turns in-place distillation off; the
    students then minimise ``(1 - w) * loss + w * distill`` with ``w`` ramping from 0 to 1 over the
    first ``distill_warmup`` of ``total_steps`` (Independent trains one config: nothing to distil).
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: Strategy,
        loss: Loss = cross_entropy,
        *,
        total_steps: int,
        forward: Forward = first_input,
        distill: bool | Distill = True,
        distill_warmup: float = DISTILL_WARMUP,
        probe_loss: Loss | None = None,
    ) -> None:
        self.net = model
        self.model = _slimmable(model)
        self.strategy = strategy
        self.loss = loss
        self.forward = forward
        self.probe_loss = probe_loss or loss
        self.distill: Distill | None = None
        if strategy.distill and distill is not False:
            self.distill = soft_target_distill if distill is True else distill
        self.distill_warmup = distill_warmup
        self.total_steps = total_steps
        self.step = 0
        strategy.setup(self.model, total_steps, self.measure)

    def measure(self, configs: Sequence[Sequence[float]], batch: Batch) -> Tensor:
        """``probe_loss`` of each config on ``batch`` (:func:`measure_losses`); the model is left as it was."""
        return measure_losses(self.model, configs, batch, self.probe_loss, self.forward)

    def distill_weight(self, step: int) -> float:
        """Weight of in-place distillation at ``step``: 0 without it, else ramping from 0 to 1 over the
        first ``distill_warmup`` of the run."""
        if self.distill is None:
            return 0.0
        ramp = self.distill_warmup * self.total_steps
        return 1.0 if ramp <= 0 else min(1.0, step / ramp)

    def train_step(
        self,
        batch: Batch,
        backward: Backward = Tensor.backward,
        *,
        step: int | None = None,
        sync: bool = True,
    ) -> StepResult:
        """Forward and backward of every config the strategy picks for ``batch``; no optimiser step.

        Each config's loss, divided by the number of configs (a mean, so a learning rate tuned for a
        single model carries over), goes to ``backward`` (e.g. ``lambda l: scaler.scale(l).backward()``;
        divide by the accumulation count there). ``step`` defaults to the count of previous calls.
        Under DDP gradients are all-reduced once, on the last config's backward; ``sync=False`` skips
        that too, for the micro-batches of an accumulation before the last.
        """
        step = self.step if step is None else step
        configs = self.strategy.step_configs(step, self.model, batch)
        w = self.distill_weight(step)
        teacher = None
        losses = []
        n = len(configs)
        ddp = isinstance(self.net, DistributedDataParallel)
        for j, alpha in enumerate(configs):
            self.model.set_widths(alpha)
            reduce = sync and j == n - 1
            with (
                typing.cast(DistributedDataParallel, self.net).no_sync()
                if ddp and not reduce
                else nullcontext()
            ):
                out = self.forward(self.net, batch)
                task = self.loss(out, batch)
                total = task
                if teacher is not None:
                    assert self.distill is not None
                    total = (1 - w) * task + w * self.distill(out, teacher)
                backward(total / n)
            if w and teacher is None:
                teacher = map_tensors(Tensor.detach, out)
            losses.append(task.detach())
        self.step = step + 1
        return StepResult(configs, losses)

    def candidates(self, probe: Batch | None = None) -> list[list[float]]:
        """The configs to calibrate, evaluate and sort into a front (``training.front_builder``).

        PareCO re-measures H on ``probe`` with the final weights first, and TwoStage runs its search on it
        (required there); without one they use the strategy's attached data, else (PareCO) the losses
        measured during training."""
        return self.strategy.candidates(self.model, probe)

    def state_dict(self) -> dict[str, Any]:
        """The strategy's state and the step count: with the model's and optimiser's, a resumed run
        trains bit for bit as an uninterrupted one (the global RNG, for dropout or augmentation, is
        the caller's to save, as in any loop)."""
        return {"strategy": self.strategy.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.strategy.load_state_dict(state["strategy"])
        self.step = int(state["step"])
