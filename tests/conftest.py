"""Shared fixtures: one trained front per session, the CLI in-process and as a real process, training helpers.

Fast subset, for the edit-test loop (measured 2026-12-07 on two xdist workers of 2-core AMD EPYCs: 1,180
tests in 68 s wall, 123 CPU-seconds; on a slower one the next day 1,205 tests in 83 s, 158 CPU-seconds; on a faster
one on 2026-12-08, 44-47 s and 81-88 CPU-seconds, the whole suite 479-527 s from a fresh clone; each
worker's collection takes 10 s, 4 s of it rewriting the test modules' asserts when no bytecode is cached, as
under PYTHONDONTWRITEBYTECODE). A test over about two CPU-seconds belongs in slow::

    python -m pytest -m "not slow" -n 2 --dist loadfile

It leaves out the tests marked ``@pytest.mark.slow`` (a few CPU-seconds or more each): kill-and-resume
trainings, the crash harness, DDP, ONNX and ExecuTorch lowering, onnxruntime benchmarking and the BO tests
that fit many GPs. Plain ``python -m pytest`` (what CI runs) runs everything; mark a new test ``slow`` when it
takes more than about two CPU-seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.export_memo import ExportMemo

# CI machines are shared and slow at times: a property test is judged on its examples, not on
# how long one example took.
settings.register_profile("pareco", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pareco")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    """One intra-op thread in this process and in the processes tests start: test machines are small and
    shared, and OpenMP threads spin-waiting for a busy core made these small forwards 10-30x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with more slow tests run first (scripts/test.sh keeps this order for xdist,
    ``--no-loadscope-reorder``), so that the run ends on short modules on both workers instead of one
    long module on one: xdist's own order, the most tests first, put the full-disk exports (six
    tests, 139 s) after hundreds of quick ones."""
    slow = Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])  # stable: order within a module kept


def _session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that the whole test session shares: under xdist each worker's basetemp is a folder of
    the session's, which the workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def _export_memo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportMemo]:
    """Identical exports are lowered once per session, across xdist workers (:mod:`tests.export_memo`)."""
    from tests.export_memo import installed

    yield from installed(_session_folder(tmp_path_factory) / "export-memo")


class CliResult(NamedTuple):
    """What one ``pareco`` call did: exit code and output, read like a ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``cli(*args)`` runs ``pareco ARGS`` in this process and returns a :class:`CliResult`.

    In-process because torch and friends are imported already (a fresh interpreter costs seconds); the
    process boundary itself is tested with ``cli_process``.
    """
    from pareco_cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        with monkeypatch.context() as m:
            m.setattr(sys, "argv", ["pareco", *args])
            m.setenv("COLUMNS", "200")  # rich tables: no truncated cells
            code = 0
            try:
                main()
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def _python(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process in the repository root, its output captured as text."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli_process() -> Callable[..., subprocess.CompletedProcess]:
    """``cli_process(*args, timeout=300)`` runs ``pareco ARGS`` in a fresh Python process, as a user would."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _python("-m", "pareco_cli.main", *args, timeout=timeout)

    return run


@pytest.fixture
def python_process() -> Callable[..., subprocess.CompletedProcess]:
    """``python_process(code, *args, timeout=300)`` runs ``python -c CODE ARGS`` in a fresh process in the
    repository root (so it imports the project's packages), as an app would."""

    def run(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _python("-c", code, *args, timeout=timeout)

    return run


@pytest.fixture
def repo_root() -> Path:
    """The repository root: the working directory for processes that import the project's packages."""
    return ROOT


@pytest.fixture
def kill_mid_epoch() -> Callable[..., None]:
    """``kill_mid_epoch(args, out, epoch=2, timeout=240)`` starts ``pareco ARGS`` in a process and SIGKILLs it
    as soon as it logs a step of ``epoch`` into ``out/train.log.jsonl`` (the run needs ``--log-every 1``)."""

    def kill(args: list[str], out: Path, epoch: int = 2, timeout: float = 240) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pareco_cli.main", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        log = out / "train.log.jsonl"
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            lines = log.read_text().splitlines() if log.exists() else []
            records = [json.loads(x) for x in lines if x.strip()]
            if any(r.get("epoch") == epoch and "step" in r for r in records):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed mid-epoch"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    return kill


@pytest.fixture
def small_train_settings() -> dict[str, Any]:
    """``TrainConfig`` keywords for a run of seconds: resnet20 on 256 synthetic 16x16 images, 4 classes."""
    return {
        "arch": "resnet20",
        "data": "synthetic:256:4",
        "image_size": 16,
        "batch_size": 32,
        "lr": 0.05,
        "candidates": 6,
        "calib_batches": 2,
        "calib_batch_size": 32,
    }


@pytest.fixture
def train_cli_args() -> Callable[..., list[str]]:
    """``train_cli_args(out, epochs, algorithm="slim", extra=())``: ``pareco train`` arguments for a small run
    (resnet20, 128 synthetic 16x16 images) into ``out`` that logs every step."""

    def args(out: Path, epochs: int, algorithm: str = "slim", extra: tuple[str, ...] = ()) -> list[str]:
        return [
            "train",
            "--arch",
            "resnet20",
            "--data",
            "synthetic:128:4",
            "--image-size",
            "16",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--epochs",
            str(epochs),
            "--algorithm",
            algorithm,
            "--candidates",
            "6",
            "--calib-batches",
            "2",
            "--calib-batch-size",
            "32",
            "--out",
            str(out),
            "--log-every",
            "1",
            *extra,
        ]

    return args


@pytest.fixture(scope="session")
def tiny_front(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained Slim front (resnet20, 256 16x16 synthetic images, 4 classes), trained once per session;
    returns the manifest path.

    Tests must not modify it: copy the folder first (see ``front_copy``).

    The first xdist worker to ask trains it and the others copy its folder, so that the session trains
    it once, and the exports of its points, which :mod:`tests.export_memo` keys on the weight file's
    bytes, are lowered once across workers.
    """
    from pareco_runtime.filelock import locked
    from pareco_runtime.manifest import MANIFEST_NAME

    shared = _session_folder(tmp_path_factory) / "tiny_front"
    with locked(shared, timeout=600):  # the other workers wait for its training (seconds)
        if not shared.is_dir():
            staged = _train_tiny_front(shared.with_name(f"tiny_front.tmp-{os.getpid()}"))
            staged.parent.rename(shared)
    out = tmp_path_factory.mktemp("tiny_front")
    shutil.copytree(shared, out, dirs_exist_ok=True)
    return out / MANIFEST_NAME


def _train_tiny_front(out: Path) -> Path:
    from training.config import TrainConfig
    from training.loop import train

    # 256 images: 51 for validation, 20 held out for selection (with 128, ties on 10 selection images
    # left a 1-point front)
    cfg = TrainConfig(
        arch="resnet20",
        data="synthetic:256:4",
        image_size=16,
        epochs=1,
        batch_size=32,
        lr=0.05,
        candidates=5,
        calib_batches=1,
        calib_batch_size=32,
    )
    return train(cfg, out, show_progress=False)


@pytest.fixture
def front_copy(tiny_front: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny front's folder, for tests that change it; returns its manifest path."""
    dst = tmp_path / "front"
    shutil.copytree(tiny_front.parent, dst)
    return dst / tiny_front.name
