"""Lock files a stranger planted: a symbolic link, a FIFO or a hard link under a lock file's name.

A lock file is opened without following links and without truncating, and must be a regular file
with one link; anything else is a one-line error naming the lock file, in this process and from a
real ``pareco`` process, and the file a link points to is left byte for byte as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pareco_runtime.filelock import lock_file_of, locked
from pareco_runtime.manifest import save_manifest
from pareco_runtime.untrusted import FormatError

from .manifests import make_manifest

_TODO = "remove it (pareco makes its lock files itself) or ask who put it there"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("the user's own file, not a lock\n")
    return victim


def test_a_symbolic_link_as_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target, victim = tmp_path / "m.front.json", _victim(tmp_path)
    lockfile = lock_file_of(target)
    lockfile.symlink_to(victim)
    with pytest.raises(FormatError) as caught, locked(target, timeout=1):
        pytest.fail("locked through a symbolic link")
    assert str(caught.value) == f"{lockfile}: is a symbolic link, not a lock file pareco made; {_TODO}"
    assert victim.read_text() == "the user's own file, not a lock\n"


def test_a_dangling_symbolic_link_creates_nothing_where_it_points(tmp_path: Path) -> None:
    target, nowhere = tmp_path / "export.json", tmp_path / "created-by-pareco"
    lock_file_of(target).symlink_to(nowhere)
    with pytest.raises(FormatError, match="is a symbolic link"), locked(target, timeout=1):
        pass
    assert not nowhere.exists()


def test_a_fifo_as_lock_file_is_refused_at_once(tmp_path: Path) -> None:
    target = tmp_path / "m.front.json"
    lockfile = lock_file_of(target)
    os.mkfifo(lockfile)
    with pytest.raises(FormatError) as caught, locked(target, timeout=1):
        pass
    assert str(caught.value) == f"{lockfile}: is a FIFO, not a lock file pareco made; {_TODO}"


def test_a_hard_link_as_lock_file_is_refused_and_its_other_name_untouched(tmp_path: Path) -> None:
    target, victim = tmp_path / "m.front.json", _victim(tmp_path)
    os.link(victim, lock_file_of(target))
    with pytest.raises(FormatError, match="is a regular file with 2 hard links"), locked(target, timeout=1):
        pass
    assert victim.read_text() == "the user's own file, not a lock\n"


def test_an_old_longer_lock_file_is_overwritten_whole_not_truncated(tmp_path: Path) -> None:
    target = tmp_path / "m.front.json"
    lockfile = lock_file_of(target)
    lockfile.write_text("4194303\n")  # a long pid an earlier holder left
    with locked(target, timeout=1):
        assert int(lockfile.read_text().strip()) == os.getpid()


@pytest.mark.slow
@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_cli_process_names_the_planted_lock_file_in_one_line(plant: str, tmp_path: Path, cli_process) -> None:
    manifest, victim = tmp_path / "m.front.json", _victim(tmp_path)
    save_manifest(manifest, make_manifest())
    lockfile = lock_file_of(manifest)
    if plant == "symlink":
        lockfile.symlink_to(victim)
    else:
        os.mkfifo(lockfile)
    # `pareco bench import` records a device profile under the manifest's lock.
    csv = tmp_path / "phone.csv"
    csv.write_text("point,latency_ms\np0,2.5\n")
    result = cli_process(
        "bench", "import", str(manifest), "--from", str(csv), "--profile", "phone", timeout=120
    )
    what = "is a symbolic link" if plant == "symlink" else "is a FIFO"
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {lockfile}: {what}, not a lock file pareco made; {_TODO}"
    ]
    assert victim.read_text() == "the user's own file, not a lock\n"
