"""Entry point of the ``pareco`` command: runs the app and turns errors into one line.

Any ``ValueError`` / ``OSError`` raised by a command (the project's errors are ValueError
subclasses with a message naming the problem and the fix) is printed as ``error: <message>`` on
stderr with exit code 2; ``--debug`` shows the traceback instead. This module imports nothing but
the standard library at load time, so that a missing extra (typer and rich are the ``cli`` extra
themselves) is reported as the ``pip install`` that fixes it.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path

# Top-level module -> the extra of pyproject.toml that installs it (an export format's packages:
# the format registry, export.formats.module_extras).
EXTRA_OF = {
    "torchvision": "vision",
    "botorch": "train",
    "gpytorch": "train",
    "linear_operator": "train",
    "sklearn": "train",
    "typer": "cli",
    "click": "cli",
    "rich": "cli",
    "matplotlib": "cli",
    "timm": "timm",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """The one-line fix for a module of an uninstalled extra, or None if ``exc`` is about another module."""
    from export.formats import module_extras  # the registry imports only the standard library

    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top) or module_extras().get(top)
    if extra is None:
        return None
    return f"this command needs {top}, which comes with pareco's '{extra}' extra; run: pip install 'pareco[{extra}]'"


# The layers keep the generic top-level names of the project's layout; pip cannot stop another
# distribution from installing a package of the same name, so the CLI checks where they resolve.
LAYERS = ("pareco_runtime", "training", "export", "bench")


def shadowed_layer_message(
    find_spec: Callable[[str], ModuleSpec | None] = importlib.util.find_spec,
) -> str | None:
    """A one-line error if a layer package resolves outside the folder pareco_cli was installed in, else None.

    Only locates the packages (``find_spec`` of a top-level name executes nothing).
    """
    home = Path(__file__).resolve().parent.parent
    for name in LAYERS:
        spec = find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or Path(origin).resolve().parent.parent != home:
            where = origin or "nowhere"
            return (
                f"the package '{name}' resolves to {where}, not pareco's (in {home}); another installed "
                f"package of that name shadows it: uninstall it or install pareco in its own virtual environment"
            )
    return None


def os_error_message(exc: OSError) -> str:
    """An ``OSError`` the commands did not explain, as ``<file>: <what>; <what to do>``.

    A full disk names the folder to free; other errors their file and the system's reason.
    """
    if exc.errno == errno.ENOSPC:
        folder = Path(exc.filename).parent if exc.filename else "the output folder"
        return (
            f"{folder}: no space left on the device; free space there (or write elsewhere) and run "
            "again; the previous files are unchanged"
        )
    if exc.errno is None:  # raised with a message of its own
        return str(exc).strip() or type(exc).__name__
    reason = exc.strerror or str(exc).strip()
    return f"{exc.filename or 'a file'}: {reason}; check the path and its permissions"


def _fail(text: str) -> None:
    print(f"error: {text.splitlines()[0] if text else 'unknown error'}", file=sys.stderr)
    sys.exit(2)


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning as the CLI prints it, ``warning: <message>``: pareco's warnings name their file and
    what to do themselves; Python's source location and code line under them are for ``--debug``."""
    return f"warning: {message}\n"


@contextlib.contextmanager
def _warnings_in_one_line(debug: bool) -> Iterator[None]:
    saved = warnings.formatwarning
    if not debug:
        warnings.formatwarning = one_line_warning
    with warnings.catch_warnings():
        if not debug:
            # gpytorch's linear_operator calls torch.jit.script when BoTorch is imported (PareCO,
            # TwoStage, specialize): torch 2.14's deprecation notice says nothing a user can act on.
            warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
        try:
            yield
        finally:
            warnings.formatwarning = saved


def main() -> None:
    """Run the CLI; exit 2 with a one-line message on bad input or a missing extra; warnings print
    as ``warning: <message>`` (with Python's location under ``--debug``)."""
    debug = "--debug" in sys.argv
    shadowed = shadowed_layer_message()
    if shadowed is not None:
        _fail(shadowed)
    try:
        from .app import app

        # Not standalone: typer's usage errors (a missing argument, an unknown option, a bad value)
        # reach the handler below and print as one line, like pareco's own errors, not as a box.
        with _warnings_in_one_line(debug):
            code = app(standalone_mode=False)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if debug or message is None:
            raise
        _fail(message)
    except OSError as exc:
        if debug:
            raise
        _fail(os_error_message(exc))
    except (ValueError, KeyError) as exc:
        if debug:
            raise
        _fail(str(exc).strip() or type(exc).__name__)
    except Exception as exc:
        message = usage_message(exc)
        if debug or message is None:
            raise
        _fail(message)
    sys.exit(code if isinstance(code, int) else 0)


def usage_message(exc: BaseException) -> str | None:
    """A command-line usage error of the CLI framework (it has ``format_message`` and the command's
    context) as ``<what>; see 'pareco CMD --help'``; None for any other exception."""
    format_message = getattr(exc, "format_message", None)
    ctx = getattr(exc, "ctx", None)
    if format_message is None or not hasattr(exc, "exit_code"):
        return None
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    command = " ".join(["pareco", *reversed(names[:-1])])
    return f"{format_message().strip().rstrip('.')}; see '{command} --help'"


if __name__ == "__main__":
    main()
