"""The front manifest as one typed object, :class:`Front`: the whole of ``NAME.front.json``, its sections
(:mod:`.sections`) and points (:mod:`.points`) as fields.

:mod:`.file` reads and writes the bytes and validates them (schema, rules, weight path, SHA-256);
:class:`Front` turns a validated manifest into typed fields and back, builds a new front from a
model, and merges measured figures into it. Every reader and writer of manifests goes through it.

Writers that change an existing manifest use :meth:`Front.update`, which holds the manifest's lock
(:mod:`pareco_runtime.filelock`) from reading to the atomic rename, so two processes recording
different profiles at once both keep theirs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import remove_stale_temporaries
from ..filelock import locked
from ..space import WidthSpace
from ..untrusted import sha256_file
from ..weights_file import BNStatsByPoint, save_weights
from .file import load_manifest, save_manifest
from .metric import Metric
from .paths import inside_folder, weights_path
from .points import FrontPoint
from .sections import Architecture, DatasetSpec, DeviceProfile, StatsFile, TrainingRecord
from .versions import manifest_format

if TYPE_CHECKING:
    from ..models.base import SlimmableNet

WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "model.front.json"


def utc_timestamp() -> str:
    """Now, in UTC, as the manifest writes dates: ``2026-11-23T23:59:00Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Front:
    """A front manifest: its weight file, architecture, width space, dataset, training record,
    device profiles and points, and the BN statistics files of points added after training
    (``stats_files``; the other points' statistics are in the weight file). ``metric``: what its points
    are ranked by (:class:`~.metric.Metric`; undeclared: top-1), the one accessor every consumer ranks
    and reports points by.

    :meth:`load` reads and validates a file; :meth:`create` builds a new front; :meth:`save` writes
    it (validated, atomically); :meth:`record_profile` merges measured figures; :meth:`update` is
    load-change-save of one file with other writers kept out meanwhile. ``path`` is the file
    it was loaded from or last saved to (None for a front not yet saved); it is not part of the
    layout and is ignored when fronts are compared.
    """

    architecture: Architecture
    width_space: WidthSpace
    dataset: DatasetSpec
    training: TrainingRecord
    points: list[FrontPoint]
    weights_file: str
    weights_sha256: str
    device_profiles: list[DeviceProfile] = field(default_factory=list)
    pareco_version: str = ""
    created: str = ""
    stats_files: list[StatsFile] = field(default_factory=list)
    metric: Metric = field(default_factory=Metric)
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        model: SlimmableNet,
        points: Sequence[FrontPoint],
        dataset: DatasetSpec,
        training: TrainingRecord,
        weights: str | os.PathLike[str],
        metric: Metric | None = None,
    ) -> Front:
        """A new front of ``model``'s ``points`` whose weight file ``weights`` is already written, ranked
        by ``metric`` (default: top-1, undeclared).

        Records the format and pareco versions, the time now, the weight file's name and its
        SHA-256 (the manifest must be saved in the weight file's folder), and the model's
        architecture and width space. No device profiles yet.
        """
        from .. import __version__

        path = Path(weights)
        return cls(
            architecture=Architecture.from_dict(model.describe()),
            width_space=model.space,
            dataset=dataset,
            training=training,
            points=list(points),
            weights_file=path.name,
            weights_sha256=sha256_file(path),
            pareco_version=__version__,
            created=utc_timestamp(),
            metric=metric or Metric(),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_weights: bool = True) -> Front:
        """Read and validate a front manifest (:func:`~.file.load_manifest`: schema,
        consistency, weight path and, with ``verify_weights``, the weight file's SHA-256)."""
        source = Path(path)
        return cls.from_dict(load_manifest(source, verify_weights=verify_weights), source)

    @classmethod
    @contextlib.contextmanager
    def update(cls, path: str | os.PathLike[str], verify_weights: bool = False) -> Iterator[Front]:
        """Lock the manifest at ``path``, load it (:meth:`load`), yield the front, and save it when the
        block ends without an exception (nothing is written otherwise).

        The lock is held from the read to the atomic rename, so a change another process makes
        meanwhile waits and is applied to this one's result instead of being overwritten; waiting
        longer than :func:`~pareco_runtime.filelock.lock_timeout` raises
        :class:`~pareco_runtime.filelock.LockTimeout`. Every read-modify-write of a manifest goes
        through here. ``verify_weights`` defaults to False: recording figures does not depend on the
        weight file's bytes, and hashing it would hold the lock for seconds on large models.
        """
        with locked(path):
            front = cls.load(path, verify_weights=verify_weights)
            yield front
            front.save(path)

    @classmethod
    def from_dict(cls, manifest: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Front:
        """The front of a schema-valid manifest dict (validate it first: :meth:`load` does)."""
        return cls(
            architecture=Architecture.from_dict(manifest["architecture"]),
            width_space=WidthSpace.from_dict(manifest["width_space"]),
            dataset=DatasetSpec.from_dict(manifest["dataset"]),
            training=TrainingRecord.from_dict(manifest["training"]),
            points=[FrontPoint.from_dict(p) for p in manifest["points"]],
            weights_file=manifest["weights"]["file"],
            weights_sha256=manifest["weights"]["sha256"],
            device_profiles=[DeviceProfile.from_dict(p) for p in manifest["device_profiles"]],
            pareco_version=manifest["pareco_version"],
            created=manifest["created"],
            stats_files=[StatsFile.from_dict(e) for e in manifest["weights"].get("bn_stats", [])],
            metric=Metric.from_dict(manifest.get("metric")),
            path=None if path is None else Path(path),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict, keys in the order the file lists them, in the oldest format
        that holds it (:attr:`format_version`)."""
        weights: dict[str, Any] = {"file": self.weights_file, "sha256": self.weights_sha256}
        if self.stats_files:
            weights["bn_stats"] = [e.to_dict() for e in self.stats_files]
        body = {
            "pareco_version": self.pareco_version,
            "created": self.created,
            "weights": weights,
            "architecture": self.architecture.to_dict(),
            "width_space": self.width_space.to_dict(),
            "dataset": self.dataset.to_dict(),
            "training": self.training.to_dict(),
            "device_profiles": [p.to_dict() for p in self.device_profiles],
            **({"metric": self.metric.to_dict()} if self.metric.declared else {}),
            "points": [p.to_dict() for p in self.points],
        }
        return {"format_version": manifest_format(body), **body}

    @property
    def format_version(self) -> int:
        """The manifest format the front is written in: the oldest that holds its fields (1, or 2 where
        it has BN statistics files, off-front points or evaluations), so a front without them stays
        readable by pareco versions that predate format 2."""
        return int(self.to_dict()["format_version"])

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Validate and write the manifest atomically to ``path`` (default: :attr:`path`); the path written.

        Raises :class:`~pareco_runtime.untrusted.FormatError` and writes nothing if the front is
        not a valid manifest. Holds the manifest's lock while writing, so a whole new manifest
        waits for an :meth:`update` in progress instead of being overwritten by it; removes the
        temporaries that killed writers left in the folder
        (:func:`~pareco_runtime.atomic.remove_stale_temporaries`).
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this front was never loaded or saved; give the path to save it to")
        with locked(target):
            remove_stale_temporaries(target.parent)
            save_manifest(target, self.to_dict())
        self.path = target
        return target

    @property
    def weights_path(self) -> Path:
        """Absolute path of the weight file, inside the manifest's folder (FormatError otherwise)."""
        if self.path is None:
            raise ValueError(
                "this front was never loaded or saved, so its weight file has no folder; save it first"
            )
        return weights_path(self.path, self.to_dict())

    def file_path(self, file: str) -> Path:
        """Absolute path of a BN statistics file named ``file`` (relative to the manifest's folder, inside it)."""
        if self.path is None:
            raise ValueError(
                "this front was never loaded or saved, so its files have no folder; save it first"
            )
        return inside_folder(self.path, file, "weights.bn_stats file")

    @property
    def profile_names(self) -> list[str]:
        """The device profiles' names, in file order."""
        return [p.name for p in self.device_profiles]

    def record_profile(
        self,
        profile: DeviceProfile,
        latency_ms: Mapping[str, float],
        energy_mj: Mapping[str, float] | None = None,
        predicted_ms: Mapping[str, float] | None = None,
        variant_ms: Mapping[tuple[str, str, str], float] | None = None,
    ) -> None:
        """Merge ``profile`` and its per-point figures into the front (not saved: call it inside
        :meth:`update`, which saves).

        The profile replaces a same-named one; other profiles and their figures are kept.
        ``latency_ms`` / ``energy_mj`` ({point id: value}) are measured values and must name points
        of this front (ValueError otherwise); ``predicted_ms`` goes to ``latency_predicted_ms`` of
        points that have no measured latency for this profile; ``variant_ms`` ({(point id, precision,
        backend): value}) are measured latencies of variants, which must exist. Values are rounded to
        6 decimals.
        """
        ids = {p.id for p in self.points}
        variants = {(p.id, *v.key): v for p in self.points for v in p.variants}
        missing = sorted(set(variant_ms or {}) - set(variants))
        if missing:
            raise ValueError(
                f"{self.path or 'front'}: point {missing[0][0]!r} has no {missing[0][1]} {missing[0][2]} "
                "variant in this manifest; it changed since the benchmark"
            )
        unknown = sorted(set(latency_ms) - ids)
        if unknown:
            raise ValueError(
                f"{self.path or 'front'}: no point {unknown[0]!r} in this manifest; it changed since "
                "the benchmark"
            )
        self.device_profiles = [p for p in self.device_profiles if p.name != profile.name] + [profile]
        name = profile.name
        for p in self.points:
            if p.id in latency_ms:
                p.latency_ms[name] = round(float(latency_ms[p.id]), 6)
            if energy_mj and p.id in energy_mj:
                p.energy_mj[name] = round(float(energy_mj[p.id]), 6)
            if predicted_ms and p.id in predicted_ms and name not in p.latency_ms:
                p.latency_predicted_ms[name] = round(float(predicted_ms[p.id]), 6)
        for key, value in (variant_ms or {}).items():
            variants[key].latency_ms[name] = round(float(value), 6)

    def record_evaluation(
        self, name: str, split: Mapping[str, Any], results: Mapping[str, Mapping[str, float]]
    ) -> None:
        """Record an evaluation named ``name`` on the test set ``split`` (a manifest split with its ``data``)
        (not saved: call it inside :meth:`update`). ``results``: {point id: figures}; a top-1 front's
        figures are ``top1`` (%) and ``loss``, for the points' ``eval_top1`` / ``eval_loss``; a front
        ranked by its own metric takes every declared figure, for the points' ``eval_metrics``.

        An evaluation of the same name is replaced, on every point. ValueError where an id names no point
        of this front or the figures are not the front's. Top-1 is rounded to 4 decimals, the rest to 6.
        """
        unknown = sorted(set(results) - {p.id for p in self.points})
        if unknown:
            raise ValueError(
                f"{self.path or 'front'}: no point {unknown[0]!r} in this manifest; it changed since "
                "the evaluation"
            )
        names = set(self.metric.names) if self.metric.declared else {"top1", "loss"}
        for pid, figures in results.items():
            if set(figures) != names:
                raise ValueError(
                    f"{self.path or 'front'}: the evaluation of point {pid!r} has figures "
                    f"{', '.join(sorted(figures))}; this front records {', '.join(sorted(names))}"
                )
        self.dataset.eval_splits = {**(self.dataset.eval_splits or {}), name: dict(split)}
        for p in self.points:
            for per_name in (p.eval_top1, p.eval_loss, p.eval_metrics):
                per_name.pop(name, None)
            if p.id not in results:
                continue
            if self.metric.declared:
                p.eval_metrics[name] = {k: round(float(v), 6) for k, v in results[p.id].items()}
            else:
                p.eval_top1[name] = round(float(results[p.id]["top1"]), 4)
                p.eval_loss[name] = round(float(results[p.id]["loss"]), 6)


def write_front(
    out_dir: str | os.PathLike[str],
    model: SlimmableNet,
    points: Sequence[FrontPoint],
    bn_stats: BNStatsByPoint,
    dataset: DatasetSpec,
    training: TrainingRecord,
    metric: Metric | None = None,
) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.front.json`` (each atomically); the manifest's path.

    The weight file holds ``model``'s full-width weights, ``bn_stats`` ({point id: {BN module
    name: (running_mean, running_var)}}) and the architecture, width space and point ids as
    metadata; the manifest is :meth:`Front.create` of it (ranked by ``metric``), saved beside it.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_NAME
    stats = {pid: dict(per_module) for pid, per_module in bn_stats.items()}
    save_weights(
        weights,
        model.state_dict(),
        stats,
        {
            "architecture": model.describe(),
            "width_space": model.space.to_dict(),
            "points": [p.id for p in points],
        },
    )
    return Front.create(model, points, dataset, training, weights, metric).save(folder / MANIFEST_NAME)
