"""The BN statistics files a manifest lists: points added to a front after training, and a front's weights
read from where the manifest puts each point's statistics.

A point added later (``pareco calibrate``; issue 18's device-specific fronts likewise) needs only its
calibrated BatchNorm statistics: the shared weights serve every config already. They go to a small
*statistics file* in the manifest's folder (:func:`~pareco_runtime.weights_file.save_stats_file`: a
weight file without the state, bound to the weight file by that file's SHA-256). The manifest lists
it under ``weights.bn_stats`` with its own SHA-256 and the points it holds.

So the shared weights are stored once however many points or fronts use them, the weight file is
never rewritten (its SHA-256, which export records and other manifests name, stays valid), and
adding a point writes only new files before the manifest: a crash leaves the old manifest with, at
worst, an unreferenced statistics file. At load, :func:`~.file.load_manifest`
checks each file's SHA-256 and :func:`front_header` / :func:`load_front_weights` that it is bound to
the manifest's weight file, so a statistics file of other weights is refused, not served.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from ..untrusted import FormatError, sha256_file
from ..weights_file import (
    BNStatsByPoint,
    WeightFile,
    WeightHeader,
    check_binding,
    load_weights,
    read_weight_header,
    save_stats_file,
)
from .front import Front, utc_timestamp
from .points import FrontPoint
from .sections import DeviceProfile, StatsFile

STATS_SUFFIX = ".bn.safetensors"
_MANIFEST_SUFFIX = ".front.json"

_Item = TypeVar("_Item")


def stats_file_name(manifest: str | os.PathLike[str], point_id: str) -> str:
    """The statistics file of one point added to ``manifest``: ``<manifest stem>.<point id>.bn.safetensors``
    (``model.c00.bn.safetensors`` beside ``model.front.json``), so fronts sharing a folder never share one."""
    name = Path(manifest).name
    stem = name[: -len(_MANIFEST_SUFFIX)] if name.endswith(_MANIFEST_SUFFIX) else Path(name).stem
    return f"{stem}.{point_id}{STATS_SUFFIX}"


def add_points(
    manifest: str | os.PathLike[str],
    points: Sequence[FrontPoint],
    bn_stats: BNStatsByPoint,
    weights_sha256: str,
    file: str,
) -> Path:
    """Add ``points`` to the front at ``manifest``, their BN statistics (``{point id: {BN module: (mean, var)}}``)
    written to the statistics file ``file`` beside it; the path of that file.

    Under the manifest's lock (:meth:`Front.update`): refuses (ValueError, nothing written) when the
    manifest's weight file is no longer the one of ``weights_sha256`` (the one the statistics were
    calibrated with), when a point's id is taken or ``file`` is already one of the front's files;
    then writes the statistics file atomically, bound to ``weights_sha256``, and the manifest listing
    it with its SHA-256. If the manifest cannot be saved, the new statistics file is removed.
    """
    written: Path | None = None
    try:
        with Front.update(manifest) as front:
            _check_addable(front, points, file, weights_sha256)
            target = front.file_path(file)
            ids = [p.id for p in points]
            save_stats_file(target, bn_stats, ids, weights_sha256)
            written = target
            front.stats_files.append(StatsFile(file, sha256_file(target), ids))
            front.points.extend(points)
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    return target


def check_derived_path(front: Front, target: str | os.PathLike[str]) -> Path:
    """``target`` as a path, if a front served by ``front``'s weight file can be saved there (in the weight
    file's folder, not ``front``'s own manifest); ValueError saying where otherwise."""
    out = Path(target)
    if front.path is None or out.resolve().parent != front.weights_path.resolve().parent:
        raise ValueError(
            f"{out}: a front served by {front.weights_file} must be saved in its folder "
            f"({front.weights_path.parent}), so the shared weights are not copied; choose a file name there"
        )
    if out.resolve() == front.path.resolve():
        raise ValueError(f"{out}: that is the front whose weights serve it; name a new file")
    return out


def save_derived_front(
    front: Front,
    target: str | os.PathLike[str],
    points: Sequence[FrontPoint],
    bn_stats: BNStatsByPoint,
    profiles: Sequence[DeviceProfile],
    extra: Mapping[str, object],
) -> Path:
    """Write a new front manifest ``target`` whose ``points`` are served by ``front``'s weight file, their
    BN statistics in one statistics file beside it; the manifest's path.

    A device-specific front (``pareco specialize``) is such a front: the shared weights are not
    copied, so ``target`` must be in the weight file's folder (ValueError otherwise, nothing
    written). ``profiles``: the device profiles its points' figures name; ``extra`` is added to the
    training record's details. The statistics file's name carries a digest of its content and is
    written first, so a crash leaves at worst an unreferenced file; a previous manifest at ``target``
    is replaced and the statistics files only it used are removed after.
    """
    out = check_derived_path(front, target)
    ids = [p.id for p in points]
    stem = out.name[: -len(_MANIFEST_SUFFIX)] if out.name.endswith(_MANIFEST_SUFFIX) else out.stem
    staging = out.with_name(f"{stem}.staging{STATS_SUFFIX}")
    save_stats_file(staging, bn_stats, ids, front.weights_sha256)
    digest = sha256_file(staging)
    stats = out.with_name(f"{stem}.{digest[:12]}{STATS_SUFFIX}")
    os.replace(staging, stats)
    previous = _stats_files_of(out)
    derived = dataclasses.replace(
        front,
        points=list(points),
        stats_files=[StatsFile(stats.name, digest, ids)],
        device_profiles=list(profiles),
        training=dataclasses.replace(front.training, extra={**front.training.extra, **extra}),
        created=utc_timestamp(),
        path=None,
    )
    try:
        derived.save(out)
    except BaseException:
        if stats.name not in previous:
            stats.unlink(missing_ok=True)
        raise
    for name in previous - {stats.name}:
        out.with_name(name).unlink(missing_ok=True)
    return out


def _stats_files_of(manifest: Path) -> set[str]:
    """The statistics files the manifest at ``manifest`` lists, none where there is no readable one."""
    try:
        return {e.file for e in Front.load(manifest, verify_weights=False).stats_files}
    except (OSError, ValueError):
        return set()


def _check_addable(front: Front, points: Sequence[FrontPoint], file: str, weights_sha256: str) -> None:
    if front.weights_sha256 != weights_sha256:
        raise ValueError(
            f"{front.path}: its weight file changed while the points were calibrated (sha256 "
            f"{front.weights_sha256[:12]}..., calibrated with {weights_sha256[:12]}...); calibrate again"
        )
    taken = {p.id for p in front.points}
    for p in points:
        if p.id in taken:
            raise ValueError(f"{front.path}: the front already has a point '{p.id}'; choose another id")
        taken.add(p.id)
    if file in {front.weights_file, *(e.file for e in front.stats_files)}:
        raise ValueError(
            f"{front.path}: '{file}' is already one of the front's files; choose another point id"
        )


def front_header(front: Front) -> WeightHeader:
    """The header of ``front``'s weights as one file: the weight file's state, and each point's BN statistics
    from where the manifest puts them (its statistics file, else the weight file); no tensor data is read.

    Each statistics file is read as :func:`~pareco_runtime.weights_file.read_weight_header` reads a weight
    file, and must be bound to the manifest's weight file and hold the points listed for it
    (:class:`~pareco_runtime.weights_file.FormatError` otherwise). ``stats_paths`` of the result says
    which points' statistics came from a statistics file.
    """
    header = read_weight_header(front.weights_path)
    merged = dict(header.bn_stats)
    paths: dict[str, Path] = {}
    for entry in front.stats_files:
        path = front.file_path(entry.file)
        stats = read_weight_header(path)
        merged.update(_bound_points(front, entry, path, stats.metadata, stats.bn_stats))
        paths.update(dict.fromkeys(entry.points, path))
    return WeightHeader(header.state, merged, header.metadata, header.path, paths)


def load_front_weights(front: Front) -> WeightFile:
    """``front``'s weight file loaded (:func:`~pareco_runtime.weights_file.load_weights`), with each point's BN
    statistics taken from where the manifest puts them, checked as :func:`front_header` checks them."""
    weights = load_weights(front.weights_path)
    merged: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = dict(weights.bn_stats)
    for entry in front.stats_files:
        path = front.file_path(entry.file)
        stats = load_weights(path)
        merged.update(_bound_points(front, entry, path, stats.metadata, stats.bn_stats))
    return WeightFile(weights.state, merged, weights.metadata, weights.path)


def _bound_points(
    front: Front,
    entry: StatsFile,
    path: Path,
    metadata: Mapping[str, object],
    bn_stats: Mapping[str, dict[str, tuple[_Item, _Item]]],
) -> dict[str, dict[str, tuple[_Item, _Item]]]:
    """The statistics of the points ``entry`` lists, from the statistics file at ``path`` (its ``metadata``
    and ``bn_stats``), once it is known to be bound to ``front``'s weight file."""
    check_binding(path, metadata, front.weights_file, front.weights_sha256)
    missing = [pid for pid in entry.points if pid not in bn_stats]
    if missing:
        raise FormatError(
            f"{path}: holds no BN statistics of point '{missing[0]}', which the manifest lists in it; "
            "restore the file or calibrate the point again"
        )
    return {pid: bn_stats[pid] for pid in entry.points}
