"""Scale-out under ``torchrun``: process group set-up and the few collectives the trainers use."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """Rank, world size and device of this process (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op when alone)."""
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over ranks, in place."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world_size
        return t

    def same_on_all_ranks(self, value: float) -> bool:
        """Whether ``value`` is bit-identical on every rank."""
        if not self.enabled:
            return True
        vals: list[object] = [None] * self.world_size
        dist.all_gather_object(vals, value)
        return all(v == vals[0] for v in vals)


def check_device(device: str | None) -> torch.device | None:
    """``device`` parsed and checked to exist on this machine (None: the default); ``ValueError`` naming
    ``--device`` for a name torch does not know, or a GPU this machine does not have."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: this machine has no usable CUDA GPU; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type != "cpu":
        raise ValueError(f"--device {device}: pareco trains on cpu or cuda; use one of them")
    return parsed


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def setup(device: str | None = None) -> Dist:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU); else run alone.

    ``device`` is checked first (:func:`check_device`)."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if world <= 1:
        return Dist(0, 1, torch.device(device or ("cuda" if cuda else "cpu")))
    rank, local = launched_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return Dist(rank, world, torch.device("cuda", local))
    return Dist(rank, world, torch.device("cpu"))


def teardown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
