"""What a network takes: each input's shape without the batch and its dtype.

Most fronts take float32 tensors (normalised images ``[C, H, W]``, feature sequences ``[C, L]``); a
language model takes integer token ids ``[T]``. :class:`InputSpec` is the one place that knows how
to make a batch of such an input (for parity checks, benchmarks and the cost model) and how to
check a caller's batch against it, so that the runtime, export and bench agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64}
"""The input dtypes pareco serves, by the name manifests and export records use."""

FLOAT = "float32"


def dtype_name(dtype: torch.dtype, where: str = "input") -> str:
    """The record name of ``dtype``: any float dtype is served as ``float32`` (the runtime's
    inputs are normalised float32); int32 and int64 (token ids) keep theirs. Another dtype (bool,
    uint8) is a ``ValueError`` naming ``where``."""
    if dtype.is_floating_point:
        return FLOAT
    for name, known in DTYPES.items():
        if known == dtype:
            return name
    raise ValueError(
        f"{where} has dtype {dtype}; pareco serves float32 inputs (normalised) or int32/int64 token ids: "
        "convert the example with .float() or .long()"
    )


def token_high(model: nn.Module) -> int | None:
    """An exclusive bound on the integer ids every embedding table of ``model`` accepts: the smallest
    table's row count; None for a network without ``nn.Embedding`` (no bound is known)."""
    rows = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return min(rows, default=None)


@dataclass(frozen=True)
class InputSpec:
    """One input of a network: ``shape`` without the batch, ``dtype`` (float32 or int32/int64 ids) and,
    for integer inputs, ``high``: the exclusive bound on ids (:func:`token_high` of the network, so
    every id is a row of every table; None where the network has no table)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None

    @classmethod
    def of(
        cls, shape: Iterable[int], dtype: str | torch.dtype = FLOAT, model: nn.Module | None = None
    ) -> InputSpec:
        """The spec of an input of ``shape`` and ``dtype`` (a name of :data:`DTYPES` or a torch dtype);
        integer ids bounded by ``model``'s embedding tables (:func:`token_high`)."""
        resolved = DTYPES[dtype] if isinstance(dtype, str) else DTYPES[dtype_name(dtype)]
        high = token_high(model) if model is not None and not resolved.is_floating_point else None
        return cls(tuple(int(v) for v in shape), resolved, high)

    @property
    def is_float(self) -> bool:
        """Whether the input is a float tensor (else integer ids)."""
        return self.dtype.is_floating_point

    @property
    def dtype_name(self) -> str:
        """The dtype's record name (``float32``, ``int32``, ``int64``)."""
        return dtype_name(self.dtype)

    def describe(self) -> str:
        """The expected batch as text: ``(N, 3, 32, 32)``, or ``(N, 64) int64`` for ids."""
        shape = "(N, " + ", ".join(map(str, self.shape)) + ")"
        return shape if self.is_float else f"{shape} {self.dtype_name}"

    def batch(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of ``n``: standard normal from ``generator`` for float inputs (they are normalised,
        so N(0, 1) is their realistic range), ids uniform in ``[0, high)`` for integer ones (zeros
        where no bound is known); zeros without a generator."""
        size = (n, *self.shape)
        if generator is None:
            return torch.zeros(size, dtype=self.dtype)
        if self.is_float:
            return torch.randn(size, generator=generator)
        return torch.randint(0, self.high or 1, size, generator=generator, dtype=self.dtype)

    def check(self, x: object, hint: str) -> None:
        """Raise ``TypeError`` / ``ValueError`` unless ``x`` is a batch of this input: a tensor of shape
        ``(N, *shape)``, of this dtype, finite (float) or ids in ``[0, high)``. ``hint`` ends the shape
        error (what to do about it)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"input must be a torch.Tensor of shape {self.describe()}, got {type(x).__name__}"
            )
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"input has shape {tuple(x.shape)}, expected {self.describe()}; {hint}")
        if x.dtype != self.dtype:
            fix = (
                "convert with x.float() after normalising"
                if self.is_float
                else f"convert with x.to(torch.{self.dtype_name})"
            )
            raise ValueError(f"input has dtype {x.dtype}, expected torch.{self.dtype_name}; {fix}")
        if self.is_float and not torch.isfinite(x).all():
            raise ValueError("input contains NaN or inf values; check the preprocessing that produced it")
        if self.is_float or not x.numel():
            return
        low, top = int(x.min()), int(x.max())
        if low < 0 or (self.high is not None and top >= self.high):
            bad = low if low < 0 else top
            raise ValueError(
                f"input holds the token id {bad}, outside the network's vocabulary [0, {self.high or 'any'}); "
                "encode the text with the tokenizer the front was trained with"
            )


__all__ = ["DTYPES", "InputSpec", "dtype_name", "token_high"]
