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
- A lock file is opened without following a symbolic link and without truncating, and must be a
  regular file with one link: a link or FIFO planted in a shared folder under a lock file's name is
  a one-line :class:`~pareco_runtime.untrusted.FormatError`, never a file emptied through the link
  or a blocked open. The pid is written over a fixed width, so nothing is ever truncated.
- POSIX only (``fcntl``); advisory, so only pareco's own writers respect it. Locks on network file
  systems are only as good as the server's ``flock`` support.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .untrusted import FormatError, format_error

DEFAULT_LOCK_TIMEOUT_S = 60.0
LOCK_TIMEOUT_ENV = "PARECO_LOCK_TIMEOUT"

# How often a waiter retries. Holders keep a manifest or index locked for milliseconds (one load,
# validation and atomic write of a small JSON file), so a short poll keeps waits short.
_POLL_S = 0.01
# The holder's pid is written right-aligned over this many bytes: wider than any pid, so a shorter
# pid overwrites a longer one whole and the file never needs truncating.
_PID_WIDTH = 24
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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


def _holder_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, _PID_WIDTH, 0).decode("ascii").strip()))
    return "unknown"


def _timeout_error(path: Path, lockfile: Path, fd: int, timeout: float) -> LockTimeout:
    holder = _holder_pid(fd) if fd >= 0 else str(os.getpid())  # another thread of ours
    return LockTimeout(
        f"{path}: locked by another pareco process (pid {holder}) for more than "
        f"{timeout:g} s; wait for it to finish or remove {lockfile} if no such process runs"
    )


def _not_a_lock(lockfile: Path, what: str) -> FormatError:
    return format_error(
        lockfile,
        f"{what}, not a lock file pareco made",
        "remove it (pareco makes its lock files itself) or ask who put it there",
    )


def _open_lock_file(lockfile: Path) -> int:
    """A descriptor of ``lockfile``, created if missing: never through a link, never a special file.

    ``O_NOFOLLOW`` refuses a symbolic link; ``O_NONBLOCK`` keeps a FIFO from blocking the open; the
    ``fstat`` of the open descriptor (not of the name, which could change in between) then refuses
    anything but a regular file with a single link (a hard link would make it another file's name).
    """
    try:
        fd = os.open(lockfile, _OPEN_FLAGS, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_a_lock(lockfile, "is a symbolic link") from None
        raise
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is a FIFO" if stat.S_ISFIFO(st.st_mode) else "is not a regular file"
    elif st.st_nlink != 1:
        problem = f"is a regular file with {st.st_nlink} hard links"
    if problem is not None:
        os.close(fd)
        raise _not_a_lock(lockfile, problem)
    return fd


def _flock(path: Path, lockfile: Path, deadline: float, timeout: float) -> int:
    """An open descriptor of ``lockfile`` with an exclusive flock on it, our pid written in it."""
    fd = _open_lock_file(lockfile)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timeout_error(path, lockfile, fd, timeout) from None
                time.sleep(_POLL_S)
        # The pid only names the holder; a full disk must not stop the lock.
        with contextlib.suppress(OSError):
            os.pwrite(fd, f"{os.getpid():>{_PID_WIDTH - 1}}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)  # closing drops the flock too, if it was taken
        raise
    return fd


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (:func:`lock_file_of`) for the ``with`` block.

    Waits at most ``timeout`` seconds (default :func:`lock_timeout`), then raises :class:`LockTimeout`
    naming the holder's pid and the lock file. A lock file that is a symbolic link, a FIFO or any
    other non-regular file is :class:`~pareco_runtime.untrusted.FormatError` (one line). Re-entrant in the thread that holds it; the folder
    is created if missing.
    """
    target = Path(path)
    wait = lock_timeout() if timeout is None else timeout
    lockfile = lock_file_of(target)
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    held = _held_for(lockfile)
    if not held.thread_lock.acquire(timeout=wait):
        raise _timeout_error(target, lockfile, -1, wait)
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
