"""Advisory file locks that serialise read-modify-write of a shared file between processes.

Two ``pareco bench --update`` runs on one manifest, or two exports into one folder, each read the file,
change it and rename a new one over it; without a lock the later rename drops the other's change
(measured before this lock existed: 4 processes x 20 rounds kept 23 of 80 profiles and 50 of 80 export
records). :func:`locked` holds an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside the file for the
whole read, modify and atomic rename.

- The lock is released by the kernel when its holder exits, killed or not, so a crash never leaves a
  file locked. The lock file itself stays (it is a few bytes holding the last holder's pid): deleting
  it on release would let a waiter lock the deleted file while a newcomer locks a new one.
- Re-entrant per thread: a thread holding the lock of a file may lock it again (nested calls go
  through). Other threads of the same process wait as other processes do.
- Locking two different files in one process never deadlocks by itself; two processes that lock the
  same two files in opposite orders would, until the timeout ends it. pareco nests only one pair,
  always in the same order: a latency table (``NAME.lut.*.json``), then its manifest.
- Waiting is bounded: after :func:`lock_timeout` seconds (:data:`DEFAULT_LOCK_TIMEOUT_S`, or the
  environment variable :data:`LOCK_TIMEOUT_ENV`) :class:`LockTimeout` names the holder's pid.
- POSIX only (``fcntl``); advisory, so only pareco's own writers respect it. Locks on network file
  systems are only as good as the server's ``flock`` support.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LOCK_TIMEOUT_S = 60.0
LOCK_TIMEOUT_ENV = "PARECO_LOCK_TIMEOUT"

# How often a waiter retries. Holders keep a manifest or index locked for milliseconds (one load,
# validation and atomic write of a small JSON file), so a short poll keeps waits short.
_POLL_S = 0.01


class LockTimeout(TimeoutError):
    """Another process (or thread) held a file's lock for longer than the timeout."""


def lock_timeout() -> float:
    """Seconds to wait for a lock: ``$PARECO_LOCK_TIMEOUT`` when set, else 60 (ValueError if it is not
    a non-negative number)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise ValueError(
            f"{LOCK_TIMEOUT_ENV}: {raw!r} is not a number of seconds; set it to e.g. "
            f"{DEFAULT_LOCK_TIMEOUT_S:g} or unset it"
        )
    return value


def lock_file_of(path: str | os.PathLike[str]) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` in the same folder."""
    target = Path(path)
    return target.with_name(f".{target.name}.lock")


@dataclass
class _Held:
    """This process's state for one lock file: the thread lock, and the flock'd descriptor while held."""

    thread_lock: threading.RLock = field(default_factory=threading.RLock)
    fd: int = -1
    depth: int = 0


_registry: dict[str, _Held] = {}
_guards = [threading.Lock()]  # one entry, replaced in a forked child


def _reset_after_fork() -> None:
    # A forked child is another process: it holds none of its parent's locks (their threads are gone).
    _registry.clear()
    _guards[0] = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _held_for(lockfile: Path) -> _Held:
    key = os.path.abspath(lockfile)
    with _guards[0]:
        return _registry.setdefault(key, _Held())


def _holder_pid(lockfile: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(lockfile.read_text(encoding="ascii").strip()))
    return "unknown"


def _timeout_error(path: Path, lockfile: Path, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"{path}: locked by another pareco process (pid {_holder_pid(lockfile)}) for more than "
        f"{timeout:g} s; wait for it to finish or remove {lockfile} if no such process runs"
    )


def _flock(path: Path, lockfile: Path, deadline: float, timeout: float) -> int:
    """An open descriptor of ``lockfile`` with an exclusive flock on it, our pid written in it."""
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timeout_error(path, lockfile, timeout) from None
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        with contextlib.suppress(
            OSError
        ):  # the pid only names the holder; a full disk must not stop the lock
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)  # closing drops the flock too, if it was taken
        raise
    return fd


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (:func:`lock_file_of`) for the ``with`` block.

    Waits at most ``timeout`` seconds (default :func:`lock_timeout`), then raises :class:`LockTimeout`
    naming the holder's pid and the lock file. Re-entrant in the thread that holds it; the folder
    is created if missing.
    """
    target = Path(path)
    wait = lock_timeout() if timeout is None else timeout
    lockfile = lock_file_of(target)
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    held = _held_for(lockfile)
    if not held.thread_lock.acquire(timeout=wait):
        raise _timeout_error(target, lockfile, wait)
    try:
        if held.depth == 0:
            held.fd = _flock(target, lockfile, deadline, wait)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                fd, held.fd = held.fd, -1
                os.close(fd)  # releases the flock
    finally:
        held.thread_lock.release()
