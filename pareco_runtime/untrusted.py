"""Reading files that a stranger or a careless user may hand over: a type check, a bounded read, bounded JSON.

Every reader of a path a user gives (manifest, weight file, latency table, export record, dataset
archive, image tree) asks :func:`regular_file` first, so a FIFO, a device such as ``/dev/zero``, a
socket, a folder or a symbolic link loop is refused at once instead of blocking the process or
streaming without end. JSON is read only through :func:`read_json` / :func:`parse_json`: at most
:data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH` levels (checked before parsing, so a
file of ten thousand ``[`` is a one-line error, not a ``RecursionError``), no duplicate keys, no
NaN or Infinity, and no number that parses to infinity (``1e400``): :func:`nonfinite_field` names
the first such field, so every number of every JSON file pareco reads (manifest, latency table,
``export.json``, weight metadata, imported latencies) is finite before any reader sees it.

Errors are :class:`FormatError` with one line ``<file>: <what is wrong>; <what to do>``
(:func:`first_line` keeps another exception's message to one line). A file another one names by its
SHA-256 is checked with :func:`sha256_file`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable
from typing import Any

# pareco's own JSON files are far below these: a manifest of 1,000 points is about 1 MiB, a latency
# table about 50 KiB, and no file pareco writes nests more than 8 levels; free-form fields
# (training.extra) get the rest of the depth.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64

# File types that are not regular files, by what reading them would do.
_SPECIAL: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
# A JSON string (escapes included) or a bracket: what the nesting count looks at.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class FormatError(ValueError):
    """A file pareco cannot use; the message is one line: ``'<file>: <what is wrong>; <what to do>'``.

    ``what`` is the middle part alone (the whole message when none is given), for a reader that
    reports the problem in its own words.
    """

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = message if what is None else what


def format_error(file: str | os.PathLike[str], what: str, todo: str) -> FormatError:
    """The :class:`FormatError` ``'<file>: <what>; <todo>'``, line breaks in the parts made spaces."""
    what = what.replace("\r", " ").replace("\n", " ")
    message = f"{file}: {what}; {todo}"
    return FormatError(message.replace("\r", " ").replace("\n", " "), what)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of the file's bytes, read in chunks (``OSError`` if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_problem(exc: OSError, what: str) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop (or a chain of too many links)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"no such {what}"
    return f"cannot be read ({exc.strerror})"


def _type_problem(mode: int, what: str) -> str:
    if stat.S_ISDIR(mode):
        return f"is a folder, not a {what}"
    kind = next((name for is_kind, name in _SPECIAL if is_kind(mode)), "special file")
    return f"is a {kind}, not a regular file, and reading it could block or never end"


def regular_file(path: str | os.PathLike[str], what: str, todo: str) -> os.stat_result:
    """The ``os.stat`` of ``path`` (links followed) if it is a regular file, else :class:`FormatError`.

    Nothing is opened. The message names the problem: ``no such <what>``, a symbolic link loop, a
    folder, a FIFO, a device, a socket, or a permission error; ``todo`` ends it.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise format_error(path, _stat_problem(exc, what), todo) from None
    if not stat.S_ISREG(st.st_mode):
        raise format_error(path, _type_problem(st.st_mode, what), todo)
    return st


def read_bounded(path: str | os.PathLike[str], what: str, todo: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (:func:`regular_file`), refused if there are more than ``limit``.

    Opened without blocking and checked again once open, so a file swapped for a FIFO in between
    cannot hang the read either; at most ``limit + 1`` bytes are ever read.
    """
    regular_file(path, what, todo)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise format_error(path, _stat_problem(exc, what), todo) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise format_error(path, _type_problem(mode, what), todo)
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise format_error(path, f"larger than {limit} bytes, more than any {what} takes", todo)
    return data


class _BadJSON(ValueError):
    """Raised by the JSON parser hooks; its message is the problem."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _BadJSON(f"duplicate key '{key}' in an object")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise _BadJSON(f"{name} is not a JSON value (use null)")


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest more than ``limit`` levels (stops at the first that does)."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = text[token.start()]
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def nonfinite_field(value: Any, where: str = "") -> str | None:
    """The path (``points[2].mflops``) of the first number in the JSON value ``value`` that is not
    finite (a float that is inf or nan, an integer beyond a float's range); None when all are.

    Python's JSON parser reads ``1e400`` as infinity without complaint; a reader that trusted it
    wrote a manifest that could never be saved again and fed infinities to torch.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "the value"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if abs(value) <= sys.float_info.max else where or "the value"
    if isinstance(value, dict):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        found = nonfinite_field(item, path)
        if found is not None:
            return found
    return None


def parse_json(
    data: bytes | str,
    source: str | os.PathLike[str],
    what: str,
    todo: str,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The JSON value of ``data`` (bytes are UTF-8, a BOM allowed), read from ``source``.

    :class:`FormatError` ('<source>: ...; <todo>') for text that is not UTF-8, nests more than
    ``max_depth`` levels (checked before parsing), is not JSON (with line and column), repeats a
    key in an object, or holds NaN / Infinity or a number that reads as infinity (the message
    names its field: :func:`nonfinite_field`).
    """
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise format_error(source, f"not a JSON {what} (not UTF-8 text at byte {exc.start})", todo) from None
    if _nests_deeper(text, max_depth):
        raise format_error(
            source, f"JSON nested more than {max_depth} levels deep, deeper than any {what}", todo
        )
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise format_error(
            source, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", todo
        ) from None
    except _BadJSON as exc:
        raise format_error(source, f"not valid {what} JSON ({exc})", todo) from None
    field = nonfinite_field(value)
    if field is not None:
        raise format_error(
            source, f"{field} is not a finite number (a JSON number beyond +-1.8e308 reads as infinity)", todo
        )
    return value


def read_json(
    path: str | os.PathLike[str],
    what: str,
    todo: str,
    limit: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The JSON value in the file ``path``: :func:`read_bounded` (at most ``limit`` bytes), then
    :func:`parse_json`; every failure is one :class:`FormatError` naming ``path`` and ending in ``todo``."""
    return parse_json(read_bounded(path, what, todo, limit), path, what, todo, max_depth)
