"""The batch sizes an exported file accepts: how ``--batch`` spells them and how ``export.json`` records them.

An ExecuTorch program plans its memory ahead: it runs either one batch size (``--batch N``) or any
batch from 1 up to a bound it was exported for (``--batch dynamic:MAX``, a ``torch.export`` Dim).
ONNX, TorchScript and ``.pt2`` files take any batch. ``export.json`` records ``N``, ``"dynamic:MAX"``
or ``"dynamic"`` (no bound); records written before bounded batches existed may lack the field.
"""

from __future__ import annotations

from dataclasses import dataclass

# The spelling of a bounded dynamic batch, on the command line and in export.json.
DYNAMIC = "dynamic"
_BOUNDED_PREFIX = f"{DYNAMIC}:"


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes ``low`` to ``high`` inclusive; ``high`` None means no upper bound.

    ``low == high``: a static batch. Every range pareco writes starts at 1 or is static.
    """

    low: int
    high: int | None

    @classmethod
    def static(cls, n: int) -> BatchRange:
        """Exactly batch ``n``."""
        return cls(n, n)

    @classmethod
    def bounded(cls, high: int) -> BatchRange:
        """Any batch from 1 to ``high``."""
        return cls(1, high)

    @classmethod
    def unbounded(cls) -> BatchRange:
        """Any batch from 1 up."""
        return cls(1, None)

    @property
    def is_static(self) -> bool:
        """True when the range holds one batch size."""
        return self.low == self.high

    def accepts(self, n: int) -> bool:
        """Whether a batch of ``n`` is inside the range."""
        return self.low <= n and (self.high is None or n <= self.high)

    def record(self) -> int | str:
        """The ``export.json`` value, which is also the ``--batch`` spelling: N, ``dynamic:MAX`` or ``dynamic``."""
        if self.is_static:
            return self.low
        return DYNAMIC if self.high is None else f"{_BOUNDED_PREFIX}{self.high}"

    def describe(self) -> str:
        """Words for messages: ``batch 4``, ``batches 1 to 8``, ``any batch``."""
        if self.is_static:
            return f"batch {self.low}"
        return "any batch" if self.high is None else f"batches {self.low} to {self.high}"


def parse_batch(text: str, flag: str = "--batch") -> BatchRange:
    """``N`` (a static batch, N >= 1) or ``dynamic:MAX`` (1 to MAX, MAX >= 2); ValueError naming ``flag``."""
    value = text.strip().lower()
    bounded = value.startswith(_BOUNDED_PREFIX)
    number = value[len(_BOUNDED_PREFIX) :] if bounded else value
    try:
        n = int(number)
    except ValueError:
        n = 0
    fix = "give a batch size N >= 1, or dynamic:MAX for any batch from 1 to MAX >= 2 (e.g. dynamic:8)"
    if bounded and n >= 2:
        return BatchRange.bounded(n)
    if not bounded and n >= 1:
        return BatchRange.static(n)
    if bounded and n == 1:
        raise ValueError(
            f"{flag} {text}: a dynamic batch needs a bound of at least 2; use {flag} 1 for batch 1"
        )
    raise ValueError(f"{flag} {text}: not a batch size; {fix}")


def recorded_batch(value: object, dynamic_format: bool) -> BatchRange | None:
    """The range an ``export.json`` ``batch`` value stands for; None when it is absent or unreadable.

    An absent value (records older than bounded batches) means any batch for a format whose files
    always take any batch (``dynamic_format``), and unknown otherwise.
    """
    if value is None:
        return BatchRange.unbounded() if dynamic_format else None
    if value == DYNAMIC:
        return BatchRange.unbounded()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return BatchRange.static(value) if value >= 1 else None
    if isinstance(value, str):
        try:
            return parse_batch(value)
        except ValueError:
            return None
    return None


def as_batch_range(batch: int | str | BatchRange) -> BatchRange:
    """``batch`` as a :class:`BatchRange` an ExecuTorch file can be exported for: an int is a static
    batch, a string is parsed as ``--batch`` spells it; a range must be static (N >= 1) or 1 to MAX
    (MAX >= 2), else ValueError."""
    if not isinstance(batch, BatchRange):
        return parse_batch(str(batch))
    if (batch.is_static and batch.low >= 1) or (
        batch.low == 1 and batch.high is not None and batch.high >= 2
    ):
        return batch
    raise ValueError(
        f"--batch: {batch.describe()} (low {batch.low}) cannot be exported; give a static batch N >= 1 "
        "or dynamic:MAX for batches 1 to MAX >= 2"
    )
