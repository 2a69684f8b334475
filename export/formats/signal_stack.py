"""A thread's alternate signal stack, kept valid across a native call that swaps it for one it later frees.

OpenVINO's CPU plugin (2026.4) gives the thread that compiles a model a signal stack of its own (mapped
memory) and, when the compiled model is freed, puts the previous stack back and unmaps its own, on
whichever thread frees the model. Compiled on one thread and freed on another, the compiling thread is
left with an unmapped signal stack, and the next signal with a Python handler delivered to it (Python
runs every handler on the alternate stack) kills the process with SIGSEGV: SIGINT, or the SIGCHLD
handler torch's DataLoader installs once any child process exits. Found as a test worker that died
while waiting for a child process, after an OpenVINO test had switched points from several threads.

:func:`keeping_signal_stack` wraps such a call: afterwards the thread runs on a stack of the same size
that this module owns and never frees, so the library's later swap back frees nothing in use.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections.abc import Iterator


class _Stack(ctypes.Structure):
    """``stack_t`` of Linux: where a thread's signal handlers run."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


# Every stack handed to a thread stays allocated: a library may later hand it to another thread.
_OWNED: dict[int, ctypes.Array[ctypes.c_char]] = {}
_LOCK = threading.Lock()


def _swap(new: _Stack | None) -> _Stack:
    """The calling thread's signal stack; replaced by ``new`` when given."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = _Stack()
    if libc.sigaltstack(None if new is None else ctypes.byref(new), ctypes.byref(old)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")
    return old


@contextlib.contextmanager
def keeping_signal_stack() -> Iterator[None]:
    """Run the ``with`` block; if it changed the calling thread's signal stack, move the thread to an
    owned stack at least as large (its own earlier one when that is owned and large enough).

    Linux only; elsewhere the block just runs.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    before = _swap(None)
    yield
    after = _swap(None)
    if after.ss_sp == before.ss_sp:
        return
    if before.ss_sp in _OWNED and before.ss_size >= after.ss_size:
        _swap(before)
        return
    stack = ctypes.create_string_buffer(after.ss_size)
    with _LOCK:
        _OWNED[ctypes.addressof(stack)] = stack
    _swap(_Stack(ctypes.addressof(stack), 0, after.ss_size))
