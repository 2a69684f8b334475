"""A valid manifest as a dict, for the tests of the file formats and of the Front object (not a test module)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pareco_runtime import build_model
from pareco_runtime.space import WidthSpace


def front_files(folder: Path) -> dict[str, bytes]:
    """Every file in a front's ``folder`` by name, with its bytes, but the lock files: each holds the pid of
    the last process that took its lock, which a refused command may be."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix != ".lock"}


@functools.cache
def resnet20_space() -> WidthSpace:
    return build_model("resnet20").space


def make_manifest(
    space: WidthSpace | None = None,
    weights_file: str = "model.safetensors",
    sha: str = "0" * 64,
    n_points: int = 4,
) -> dict[str, Any]:
    """A valid manifest for ResNet20's width space (or ``space``)."""
    space = space or resnet20_space()
    points = []
    for i in range(n_points):
        w = space.low + (space.high - space.low) * i / max(1, n_points - 1)
        alpha = space.uniform(w)
        points.append(
            {
                "id": f"p{i}",
                "alpha": alpha,
                "channels": space.channels(alpha),
                "mflops": 10.0 + i,
                "params": 1000 * (i + 1),
                "top1": 80.0 + i,
                "loss": 0.5,
                "latency_ms": {"cpu1": 1.5 + i},
                "energy_mj": {"cpu1": 3.0},
                "latency_predicted_ms": {},
            }
        )
    return {
        "format_version": 1,
        "pareco_version": "0.1.0",
        "created": "2026-11-23T23:59:00Z",
        "weights": {"file": weights_file, "sha256": sha},
        "architecture": {"arch": "resnet20", "kwargs": {"width": 1, "num_classes": 10}},
        "width_space": space.to_dict(),
        "dataset": {
            "name": "cifar10",
            "input_size": [3, 32, 32],
            "mean": [0.49, 0.48, 0.45],
            "std": [0.25, 0.24, 0.26],
            "class_names": [f"c{i}" for i in range(10)],
        },
        "training": {
            "algorithm": "pareco",
            "epochs": 2,
            "seed": 0,
            "wall_time_s": 12.5,
            "history_size": 32,
            "extra": {"anything": [1, 2]},
        },
        "device_profiles": [
            {
                "name": "cpu1",
                "runtime": "torch",
                "threads": 1,
                "batch": 1,
                "host": "box",
                "date": "2026-11-23",
                "versions": {"torch": "2.14"},
                "energy_source": "estimate",
            }
        ],
        "points": points,
    }


def with_format_2(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` using every field format 2 added: its last point calibrated off the front, with its BN
    statistics in a file of its own, and an evaluation of every point on a named test set."""
    last = manifest["points"][-1]
    last["origin"] = "calibrated"
    manifest["format_version"] = 2
    manifest["weights"]["bn_stats"] = [
        {"file": f"model.{last['id']}.bn.safetensors", "sha256": "1" * 64, "points": [last["id"]]}
    ]
    manifest["dataset"]["eval_splits"] = {
        "cifar10-test": {"name": "test", "images": 10000, "data": "cifar10"}
    }
    for point in manifest["points"]:
        point["eval_top1"] = {"cifar10-test": point["top1"]}
        point["eval_loss"] = {"cifar10-test": 0.75}
    return manifest
