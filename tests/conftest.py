"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI machines are shared and slow at times: a property test is judged on its examples, not on
# how long one example took.
settings.register_profile("pareco", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pareco")

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``pareco ARGS`` in a subprocess, as a user would, and capture its output."""
    return subprocess.run([sys.executable, "-m", "pareco_cli.main", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def kill_mid_epoch(args: list[str], out: Path, epoch: int = 2, timeout: float = 240) -> None:
    """Start ``pareco ARGS`` and SIGKILL it as soon as it logs a step of ``epoch`` (needs ``--log-every 1``)."""
    import json
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pareco_cli.main", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "train.log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(json.loads(x).get("epoch") == epoch and "step" in json.loads(x) for x in lines if x.strip()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed mid-epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_front(tmp_path_factory) -> Path:
    """A small trained Slim front (resnet20, 16x16 synthetic data, 4 classes); returns the manifest path.

    Tests must not modify it: copy the folder first (see ``front_copy``).
    """
    from training.config import TrainConfig
    from training.loop import train

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
