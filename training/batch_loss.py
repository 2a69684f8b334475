"""The user's side of a training step: batch, output and loss types, the defaults, and measuring configs.

A batch and a model's output may have any structure (tensor, tuple, dict). ``forward(net, batch)``
makes the output (default :func:`first_input`), ``loss(output, batch)`` a scalar (default
:func:`cross_entropy`), ``distill(student, teacher)`` the in-place distillation term (default
:func:`soft_target_distill`). Strategies measure configs with :func:`measure_losses`; the
:class:`training.trainer.Trainer` runs the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pareco_runtime.models.base import SlimmableNet

Batch = Any
Output = Any
Forward = Callable[[nn.Module, Batch], Output]
Loss = Callable[[Output, Batch], Tensor]
Distill = Callable[[Output, Output], Tensor]
Backward = Callable[[Tensor], None]
Measure = Callable[[Sequence[Sequence[float]], Batch], Tensor]


def first_input(net: nn.Module, batch: Batch) -> Output:
    """The default forward: ``net(batch[0])`` (batches of ``(inputs, targets, ...)``)."""
    return net(batch[0])


def cross_entropy(output: Tensor, batch: Batch) -> Tensor:
    """The default loss: mean cross-entropy of the logits ``output`` against the labels ``batch[1]``."""
    return F.cross_entropy(output, batch[1])


def soft_target_distill(student: Output, teacher: Output) -> Tensor:
    """The default in-place distillation: cross-entropy of the student's logits against the teacher's
    softmax, in float32 (bf16 logits under autocast are upcast first).

    It is KL(teacher ‖ student) plus the teacher's entropy, which does not depend on the student: the
    same gradients as KL. Logits only; a ValueError names the fix for any other output.
    """
    if not (isinstance(student, Tensor) and isinstance(teacher, Tensor)):
        raise ValueError(
            f"in-place distillation matches logits by default, but the model returns a "
            f"{type(student).__name__}; pass Trainer(distill=fn(student_out, teacher_out)) or distill=False"
        )
    target = teacher.float().softmax(1)
    return -(target * F.log_softmax(student.float(), dim=1)).sum(1).mean()


def map_tensors(fn: Callable[[Tensor], Tensor], obj: Any) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside its tuples, lists and dicts."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple takes its fields one by one
        return type(obj)(*(map_tensors(fn, v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(fn, v) for v in obj)
    return obj


def head(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of ``batch``: every tensor in it sliced along its first dimension."""
    return map_tensors(lambda t: t[:n] if t.dim() else t, batch)


@torch.no_grad()
def measure_losses(
    model: SlimmableNet,
    configs: Sequence[Sequence[float]],
    batch: Batch,
    loss: Loss = cross_entropy,
    forward: Forward = first_input,
) -> Tensor:
    """``loss`` of each config on ``batch``, BN normalising with the batch's own statistics.

    Leaves the model bit-identical: BN layers run with ``track_running_stats`` off, so no running
    statistic or ``num_batches_tracked`` is written, nothing has a gradient, and the mode and active
    config are restored. Returns a float32 tensor on the losses' device, one entry per config.
    """
    bns = [bn for _, bn in model.bn_layers]
    tracked = [bn.track_running_stats for bn in bns]
    values = []
    # Tracking goes off before entering: then no BN layer writes its buffers and config() copies none.
    for bn in bns:
        bn.track_running_stats = False
    try:
        with model.config(train=True):
            for a in configs:
                model.set_widths(a)
                values.append(loss(forward(model, batch), batch).float())
    finally:
        for bn, t in zip(bns, tracked):
            bn.track_running_stats = t
    return torch.stack(values) if values else torch.empty(0)
