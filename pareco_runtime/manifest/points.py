"""A front point and its quantized variants: the manifest's ``points[]`` entries and their ``variants[]``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The precisions a front point can be deployed in: its float weights, and post-training int8 programs.
PRECISIONS = ("fp32", "int8")


@dataclass
class Variant:
    """A quantized program of a front point, with its own measured figures (``pareco export --int8``).

    ``precision``: "int8"; ``backend``: the runtime that runs it (a compiled backend: "onnxruntime", "executorch", "litert", "openvino"; as
    ``pareco bench --backend`` names them); ``top1``: its top-1 in percent and ``fp32_top1`` the float
    point's, both measured in the same run on the same images (``split``: which, as the manifest's
    splits are recorded), so ``fp32_top1 - top1`` is the drop quantization costs; on a front ranked by
    a metric of its own (:mod:`.metric`) ``metrics`` / ``fp32_metrics`` hold every declared figure
    instead, measured alike, and ``top1`` / ``fp32_top1`` are None; ``bytes``: the program file's size;
    ``latency_ms``: per device-profile name, measured by ``pareco bench`` (profiles of its backend).
    """

    precision: str
    backend: str
    top1: float | None
    fp32_top1: float | None
    split: dict[str, Any]
    bytes: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    fp32_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def drop(self) -> float | None:
        """Top-1 points lost to quantization (negative when the int8 program scored higher); None for a
        variant of a front ranked by its own metric (:meth:`.metric.Metric.variant_drop` covers both)."""
        return None if self.top1 is None or self.fp32_top1 is None else self.fp32_top1 - self.top1

    @property
    def key(self) -> tuple[str, str]:
        """What identifies it among its point's variants: (precision, backend)."""
        return self.precision, self.backend

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the manifest's field names (``top1`` / ``fp32_top1`` or ``metrics`` /
        ``fp32_metrics``, whichever it has)."""
        d = asdict(self)
        for key in ("top1", "fp32_top1", "metrics", "fp32_metrics"):
            if d[key] in (None, {}):
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Variant:
        """Inverse of :meth:`to_dict`."""
        return cls(
            precision=str(d["precision"]),
            backend=str(d["backend"]),
            top1=None if d.get("top1") is None else float(d["top1"]),
            fp32_top1=None if d.get("fp32_top1") is None else float(d["fp32_top1"]),
            split=dict(d["split"]),
            bytes=int(d["bytes"]),
            latency_ms=dict(d.get("latency_ms") or {}),
            metrics={str(k): float(v) for k, v in (d.get("metrics") or {}).items()},
            fp32_metrics={str(k): float(v) for k, v in (d.get("fp32_metrics") or {}).items()},
        )


# Fields a point's dict leaves out when unset, so files written before they existed keep their bytes.
_OPTIONAL = (
    "selection_top1", "origin", "eval_top1", "eval_loss", "variants", "metrics", "selection_metrics",
    "eval_metrics",
)  # fmt: skip


@dataclass
class FrontPoint:
    """One sub-network of a front.

    ``alpha``: width multipliers; ``channels``: channel count per width group; ``mflops``:
    multiply-accumulates in millions at batch 1 (the field's "FLOPs"); ``params``: trainable
    parameters; ``top1``: top-1 in percent on the split the manifest's ``dataset.splits`` names (the test
    split where the data has one; None if not measured); ``loss``: cross-entropy on that split;
    ``selection_top1``: top-1 on the split the point was chosen on, held out of the training images
    (None where points were chosen on the ``top1`` split itself); ``latency_ms`` / ``energy_mj``: per device-profile name, measured;
    ``latency_predicted_ms``: per profile, estimated by a latency look-up table (never mixed with
    measured values); ``origin``: "calibrated" for a point added off the trained front (``pareco
    calibrate``), None for one training chose; ``eval_top1`` / ``eval_loss``: per evaluation name
    (the manifest's ``dataset.eval_splits``), top-1 in percent and cross-entropy on that test set;
    ``variants``: its quantized programs (:class:`Variant`; the point itself is the fp32 one);
    ``metrics`` / ``selection_metrics``: on a front that declares its metric (:mod:`.metric`), every
    declared figure by name on the reported split and on the split the point was chosen on;
    ``eval_metrics``: on such a front, per evaluation name (``dataset.eval_splits``), every declared
    figure on that test set (what ``eval_top1`` / ``eval_loss`` hold for a top-1 front).
    """

    id: str
    alpha: list[float]
    channels: list[int]
    mflops: float
    params: int
    top1: float | None = None
    loss: float | None = None
    selection_top1: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    energy_mj: dict[str, float] = field(default_factory=dict)
    latency_predicted_ms: dict[str, float] = field(default_factory=dict)
    origin: str | None = None
    eval_top1: dict[str, float] = field(default_factory=dict)
    eval_loss: dict[str, float] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    selection_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def variant(self, precision: str, backend: str) -> Variant | None:
        """Its variant of this precision for this backend, or None."""
        return next((v for v in self.variants if v.key == (precision, backend)), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the manifest's field names (``selection_top1``, ``origin``, ``eval_top1``,
        ``eval_loss``, ``variants``, ``metrics``, ``selection_metrics`` and ``eval_metrics`` only when set, so files written before they existed keep their form)."""
        d = asdict(self)
        d["variants"] = [v.to_dict() for v in self.variants]
        for key in _OPTIONAL:
            if d[key] in (None, {}, []):
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontPoint:
        """Inverse of :meth:`to_dict` (unknown keys are rejected by the manifest schema, not here)."""
        return cls(
            id=str(d["id"]),
            alpha=[float(a) for a in d["alpha"]],
            channels=[int(c) for c in d["channels"]],
            mflops=float(d["mflops"]),
            params=int(d["params"]),
            top1=d.get("top1"),
            loss=d.get("loss"),
            selection_top1=d.get("selection_top1"),
            latency_ms=dict(d.get("latency_ms") or {}),
            energy_mj=dict(d.get("energy_mj") or {}),
            latency_predicted_ms=dict(d.get("latency_predicted_ms") or {}),
            origin=d.get("origin"),
            eval_top1=dict(d.get("eval_top1") or {}),
            eval_loss=dict(d.get("eval_loss") or {}),
            variants=[Variant.from_dict(v) for v in d.get("variants") or []],
            metrics={str(k): float(v) for k, v in (d.get("metrics") or {}).items()},
            selection_metrics={str(k): float(v) for k, v in (d.get("selection_metrics") or {}).items()},
            eval_metrics={
                str(name): {str(k): float(v) for k, v in figures.items()}
                for name, figures in (d.get("eval_metrics") or {}).items()
            },
        )
