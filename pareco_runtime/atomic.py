"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Temporary files and staging folders are named ``.<name>.<pid>.<random>.tmp`` / ``.staging`` beside
their target: the writer's pid in the name lets :func:`remove_stale_temporaries` tell what a killed
writer left behind (its pid runs no more) from what a running writer is still using.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# mkstemp creates 0600 files; written files get the permissions an ordinary open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK

# What the names of atomic_path's files and staging_dir's folders look like: the pid, then mkstemp's
# 8 random characters (tests check that real temporaries match, so a change there shows).
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.(?:tmp|staging)$")


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched; an ``OSError`` that names
    no file (a write into an open file: a full disk) is given ``path`` as its filename, so that the
    message can say which file could not be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _MODE)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` to produce the file, then move it into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def staging_dir(path: str | os.PathLike[str]) -> Path:
    """A new, empty folder beside ``path`` to build it in, named ``.<name>.<pid>.<random>.staging``.

    The caller removes it when done; if the process dies first, :func:`remove_stale_temporaries`
    removes it on the next run in that folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".staging", dir=target.parent))


def _process_runs(pid: int) -> bool:
    """Whether ``pid`` is a process on this machine (another user's included); unknown counts as yes."""
    if pid <= 0:  # os.kill(0, ...) would address our process group, not a pid
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and staging folders in ``directory`` (not below it) whose writer
    process no longer runs; the paths removed, sorted.

    Only names that :func:`atomic_path` and :func:`staging_dir` make are considered, and only when
    the pid in the name is not a running process, so a running writer's temporaries (this
    process's own included) are never touched. A pid reused by an unrelated process keeps its
    leftovers until that process ends. A missing folder has nothing to remove.
    """
    folder = Path(directory)
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _process_runs(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return sorted(removed)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
