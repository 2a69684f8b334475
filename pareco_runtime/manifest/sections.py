"""The manifest's sections besides its points: architecture, dataset, training record, device profiles,
and the BN statistics files ``weights.bn_stats`` lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..inputs import FLOAT
from ..models import build_model
from ..sources import ModelFactory

if TYPE_CHECKING:
    from ..models.base import SlimmableNet


@dataclass
class Architecture:
    """The network a front belongs to: a name :func:`build_model` accepts and its constructor arguments."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, factory: ModelFactory | None = None) -> SlimmableNet:
        """A freshly initialised model of this architecture (``factory``: the builder of a user's own
        converted architecture, see :mod:`pareco_runtime.sources`)."""
        return build_model(self.arch, factory=factory, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``architecture`` object (also what ``SlimmableNet.describe()`` returns)."""
        return {"arch": self.arch, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Architecture:
        """Inverse of :meth:`to_dict`."""
        return cls(arch=d["arch"], kwargs=dict(d.get("kwargs") or {}))


@dataclass
class DatasetSpec:
    """What the network's inputs must look like and what its outputs mean.

    ``input_size``: (C, H, W) images, (C, L) sequences, (T,) token ids; ``input_dtype``: ``float32``
    (normalised inputs) or, for token ids, ``int64`` / ``int32`` (format 6; written only when not
    float32); ``mean`` / ``std``: the per-channel normalisation float inputs get;
    ``class_names``: in output order (empty when unknown); ``preprocess``: the resize and crop
    (:meth:`pareco_runtime.preprocess.Preprocess.to_dict`; None: the whole image to the input size);
    ``splits``: which images the points' ``top1`` and ``selection_top1`` are from (``{"top1": split,
    "selection": split}``, each ``{"name", "images"[, "fraction", "seed"]}``; no ``selection``: the
    points were chosen on the ``top1`` split; None: not recorded); ``eval_splits``: the test sets of
    the points' ``eval_top1`` / ``eval_loss`` (or ``eval_metrics``) by evaluation name, each a split with the ``data`` it
    was taken from (``pareco eval --write``; None: none).
    """

    name: str
    input_size: tuple[int, ...]
    mean: list[float]
    std: list[float]
    class_names: list[str] = field(default_factory=list)
    preprocess: dict[str, Any] | None = None
    splits: dict[str, Any] | None = None
    eval_splits: dict[str, dict[str, Any]] | None = None
    input_dtype: str = FLOAT

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``dataset`` object."""
        d: dict[str, Any] = {
            "name": self.name,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
        }
        if self.preprocess is not None:
            d["preprocess"] = dict(self.preprocess)
        if self.splits is not None:
            d["splits"] = dict(self.splits)
        if self.eval_splits:
            d["eval_splits"] = {name: dict(split) for name, split in self.eval_splits.items()}
        if self.input_dtype != FLOAT:  # absent in float fronts, so they keep their older format
            d["input_dtype"] = self.input_dtype
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            input_size=tuple(int(v) for v in d["input_size"]),
            mean=[float(v) for v in d["mean"]],
            std=[float(v) for v in d["std"]],
            class_names=[str(n) for n in d.get("class_names") or []],
            preprocess=dict(d["preprocess"]) if d.get("preprocess") else None,
            splits=dict(d["splits"]) if d.get("splits") else None,
            eval_splits={n: dict(s) for n, s in d["eval_splits"].items()} if d.get("eval_splits") else None,
            input_dtype=str(d.get("input_dtype", FLOAT)),
        )


@dataclass
class TrainingRecord:
    """How a front was trained: algorithm, epochs, seed, wall time, PareCO's |H| (None for other
    algorithms) and free-form ``extra`` details."""

    algorithm: str
    epochs: int
    seed: int
    wall_time_s: float
    history_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``training`` object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingRecord:
        """Inverse of :meth:`to_dict` (``history_size`` and ``extra`` may be absent)."""
        return cls(
            algorithm=d["algorithm"],
            epochs=int(d["epochs"]),
            seed=int(d["seed"]),
            wall_time_s=float(d["wall_time_s"]),
            history_size=d.get("history_size"),
            extra=dict(d.get("extra") or {}),
        )


@dataclass
class StatsFile:
    """A BN statistics file of a front (the manifest's ``weights.bn_stats``): its name relative to the
    manifest's folder, its SHA-256, and the ids of the points whose statistics it holds
    (:mod:`.stats_files`)."""

    file: str
    sha256: str
    points: list[str]

    def to_dict(self) -> dict[str, Any]:
        """One entry of the manifest's ``weights.bn_stats``."""
        return {"file": self.file, "sha256": self.sha256, "points": list(self.points)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StatsFile:
        """Inverse of :meth:`to_dict`."""
        return cls(file=d["file"], sha256=d["sha256"], points=[str(p) for p in d["points"]])


@dataclass
class DeviceProfile:
    """Where and how latencies (and energies) of a front were measured.

    ``energy_source`` is "rapl" or "nvml" when energy was measured, "estimate" when it was
    derived from a model of the host (and so labelled), None when no energy is recorded.
    """

    name: str
    runtime: str
    threads: int
    batch: int
    host: str
    date: str
    versions: dict[str, str] = field(default_factory=dict)
    energy_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceProfile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            runtime=d["runtime"],
            threads=int(d["threads"]),
            batch=int(d["batch"]),
            host=d["host"],
            date=d["date"],
            versions=dict(d.get("versions") or {}),
            energy_source=d.get("energy_source"),
        )
