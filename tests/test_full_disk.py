"""A disk that fills up mid-write loses nothing and crashes nothing: one-line error, exit 2, the
previous files byte for byte, no staging or temporary files left (issue: reliability, round 2).

Each test mounts a small tmpfs (root on Linux); where that is not possible the tests skip, saying why.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DISK_BYTES = 16 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Take all of ``disk``'s free space but ``leave`` bytes."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "ab") as fh:
        fh.write(b"\0" * max(0, free - leave))


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the filler and lock files (a lock file is empty and stays)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "filler" and not p.name.endswith(".lock")
    }


def leftovers(folder: Path) -> list[str]:
    """Staging folders and temporary files a write left behind."""
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".staging")))


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and lines[-1].startswith("error: "), r.stderr[-2000:]
    return lines[-1]


@pytest.mark.parametrize(
    "fmt",
    [
        "torchscript",  # torch's C++ writer aborted the process here (exit 134)
        pytest.param("pt2", marks=pytest.mark.slow),
        pytest.param("onnx", marks=pytest.mark.slow),
        pytest.param("executorch", marks=pytest.mark.slow),
    ],
)
@pytest.mark.slow
def test_export_on_a_full_disk(fmt: str, tiny_front: Path, small_disk: Path, cli, cli_process) -> None:
    out = small_disk / "exports"
    # In this process while the disk has room (a fresh interpreter costs seconds); the export onto the
    # full disk below runs in its own, since a writer may abort the process there.
    first = cli("export", str(tiny_front), "--point", "p00", f"--{fmt}", "--out", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(out)
    fill(small_disk, leave=2048)
    again = cli_process(
        "export", str(tiny_front), "--point", "p01", "--point", "p00", f"--{fmt}", "--out", str(out)
    )
    message = one_line_error(again)
    assert "no space left" in message.lower() or "No space left" in message, message
    assert snapshot(out) == before  # the first export and export.json, byte for byte
    assert leftovers(small_disk) == []


@pytest.mark.slow
def test_bench_update_on_a_full_disk(tiny_front: Path, small_disk: Path, cli_process) -> None:
    for name in (tiny_front.name, "model.safetensors"):
        shutil.copy(tiny_front.parent / name, small_disk / name)
    manifest = small_disk / tiny_front.name
    before = snapshot(small_disk)
    fill(small_disk, leave=512)
    r = cli_process("bench", str(manifest), "--update", "--profile", "full-disk", "--points", "p00")
    message = one_line_error(r)
    assert f"{small_disk}: no space left on the device" in message and "unchanged" in message
    assert snapshot(small_disk) == before and leftovers(small_disk) == []


@pytest.mark.slow
def test_training_on_a_full_disk_then_resume(small_disk: Path, cli_process) -> None:
    out = small_disk / "run"
    fill(small_disk, leave=300_000)  # room for run.json and the log, not for the first checkpoint
    args = ["train", "--data", "synthetic:256:4", "--image-size", "16", "--epochs", "2", "--batch-size", "32"]
    args += ["--candidates", "4", "--calib-batches", "1", "--out", str(out)]
    message = one_line_error(cli_process(*args))
    assert "no space left on the device" in message
    assert leftovers(small_disk) == [] and not (out / "model.front.json").exists()
    (small_disk / "filler").unlink()
    resumed = cli_process(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.front.json").exists() and leftovers(small_disk) == []
