"""After training: calibrate and evaluate candidates, keep the non-dominated ones, write the files."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pareco_runtime import __version__
from pareco_runtime.fileformat import FORMAT_VERSION, save_manifest, save_weights, sha256_file
from pareco_runtime.front import FrontPoint, non_dominated
from pareco_runtime.models.base import SlimmableNet

from .calibrate import BNStats, calibrate_bn, evaluate

WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "model.front.json"


@dataclass
class Candidate:
    """A calibrated and evaluated config."""

    alpha: list[float]
    channels: list[int]
    macs: int
    params: int
    top1: float
    loss: float
    stats: BNStats


def evaluate_candidates(model: SlimmableNet, configs: Sequence[Sequence[float]], data: Any, calib_batches: int,
                        calib_batch_size: int, seed: int, eval_batch_size: int = 500,
                        on_done: Callable[[int, int], None] | None = None) -> list[Candidate]:
    """Calibrate BN for each distinct sub-network among ``configs`` and evaluate it on validation data.

    Configs that map to identical channel counts are the same sub-network and are evaluated once.
    Every candidate is calibrated on the same seeded training batches (no augmentation). The model is
    left exactly as it was.
    """
    seen: set[tuple[int, ...]] = set()
    unique = []
    for a in configs:
        key = tuple(model.channels(a))
        if key not in seen:
            seen.add(key)
            unique.append(list(a))
    out = []
    for i, alpha in enumerate(unique):
        batches = (x for x, _ in data.calib_batches(calib_batch_size, calib_batches, seed))
        stats = calibrate_bn(model, alpha, batches)
        ev = evaluate(model, alpha, stats, data.val_batches(eval_batch_size))
        out.append(Candidate(alpha, model.channels(alpha), model.macs(alpha), model.params(alpha), ev.top1, ev.loss,
                             stats))
        if on_done:
            on_done(i + 1, len(unique))
    return out


def pareto_candidates(cands: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated candidates on (error, MACs), cheapest first."""
    front = non_dominated(list(cands), lambda c: (-c.top1, c.macs))
    return sorted(front, key=lambda c: (c.macs, -c.top1))


def write_outputs(out_dir: Path, model: SlimmableNet, front: Sequence[Candidate], data_info: Any,
                  training: dict[str, Any]) -> tuple[Path, Path]:
    """Write the weight file and the front manifest into ``out_dir`` (both atomically).

    Points get ids ``p00``, ``p01``, ... in increasing MACs. Returns (weights path, manifest path).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:02d}" for i in range(len(front))]
    bn_stats = {pid: {name: st for name, st in zip(model.bn_names, c.stats)} for pid, c in zip(ids, front)}
    weights = out_dir / WEIGHTS_NAME
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bn_stats_cpu = {pid: {n: (m.cpu(), v.cpu()) for n, (m, v) in d.items()} for pid, d in bn_stats.items()}
    save_weights(weights, state, bn_stats_cpu,
                 {"architecture": model.describe(), "width_space": model.space.to_dict(), "points": ids})
    points = [
        FrontPoint(id=pid, alpha=[round(a, 6) for a in c.alpha], channels=c.channels, mflops=c.macs / 1e6,
                   params=c.params, top1=round(c.top1, 4), loss=round(c.loss, 6))
        for pid, c in zip(ids, front)
    ]
    manifest = {
        "format_version": FORMAT_VERSION,
        "pareco_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(weights)},
        "architecture": model.describe(),
        "width_space": model.space.to_dict(),
        "dataset": {
            "name": data_info.name,
            "input_size": list(data_info.input_size),
            "mean": list(data_info.mean),
            "std": list(data_info.std),
            "class_names": list(data_info.class_names),
        },
        "training": training,
        "device_profiles": [],
        "points": [p.to_dict() for p in points],
    }
    manifest_path = out_dir / MANIFEST_NAME
    save_manifest(manifest_path, manifest)
    return weights, manifest_path
