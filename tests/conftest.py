"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``pareco ARGS`` in a subprocess, as a user would, and capture its output."""
    return subprocess.run([sys.executable, "-m", "pareco_runtime.cli.main", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_front(tmp_path_factory) -> Path:
    """A small trained Slim front (resnet20, 16x16 synthetic data, 4 classes); returns the manifest path.

    Tests must not modify it: copy the folder first (see ``front_copy``).
    """
    from training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_front")
    cfg = TrainConfig(arch="resnet20", data="synthetic:128:4", image_size=16, epochs=1, batch_size=32, lr=0.05,
                      candidates=5, calib_batches=1, calib_batch_size=32)
    return train(cfg, out, show_progress=False)


@pytest.fixture
def front_copy(tiny_front, tmp_path) -> Path:
    """A private copy of the tiny front's folder; returns its manifest path."""
    import shutil

    dst = tmp_path / "front"
    shutil.copytree(tiny_front.parent, dst)
    return dst / tiny_front.name
