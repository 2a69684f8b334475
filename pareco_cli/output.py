"""Shared output helpers of the CLI: JSON to stdout, rich tables to the terminal, files only where the
command owns them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_UNBOUNDED = 1 << 20  # columns: wider than any table pareco prints
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (machine-readable ``--json`` output)."""
    print(json.dumps(obj, indent=2))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table with the given column headers and rows (values formatted with str, None as '-').

    No cell is ever cut short: on a terminal a cell too wide folds onto more lines; on a pipe or in a
    file each row is one line as wide as it needs, so a log grepped for an id or a header finds it.
    Text is printed as it is (a ``[`` in a manifest's names is not rich markup).
    """
    from rich.console import Console, JustifyMethod
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    for c in columns:
        justify: JustifyMethod = "right" if c not in ("id", "arch", "group", "name") else "left"
        table.add_column(Text(c), justify=justify, overflow="fold")
    for r in rows:
        table.add_row(*(Text("-" if v is None else str(v)) for v in r))
    console = Console()
    if not console.is_terminal:
        # rich would fit the table to 80 columns (or $COLUMNS), end cells in '…' and wrap the title at
        # the table's width: the title is one line of its own and the table as wide as it needs.
        table.title = None
        natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
        console = Console(width=max(natural, len(title), console.width))
        console.print(Text(title))
    console.print(table)


def check_output(path: Path, flag: str, suffix: str, ours: Callable[[Path], bool], fix: str) -> None:
    """Refuse, in one ValueError ``<flag> <path>: <what>; <fix>``, a file the command may not write: a
    name not ending in ``suffix`` (so never a weight or statistics file, a checkpoint, a run record or
    another kind of file a front uses), a folder, or an existing file that ``ours`` does not recognise
    as one of this command's outputs. ``--force`` does not lift this; it replaces only a file of ours."""
    if not path.name.lower().endswith(suffix):
        what = f"not a {suffix} file"
    elif path.is_dir():
        what = "a folder"
    elif (path.exists() or path.is_symlink()) and not ours(path):
        what = f"an existing file that is not a {suffix} this command wrote"
    else:
        return
    raise ValueError(f"{flag} {path}: {what}; {fix}")


def is_png(path: Path) -> bool:
    """Whether ``path`` is a regular file starting with the PNG signature (a plot a command may redraw)."""
    if not path.is_file():  # never opened: a FIFO would block the command
        return False
    try:
        with path.open("rb") as fh:
            return fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def is_latency_table(path: Path) -> bool:
    """Whether ``path`` reads as a latency table (one a command that builds tables may replace)."""
    from pareco_runtime.latency_table import LatencyLUT

    try:
        LatencyLUT.load(path)
    except (OSError, ValueError):
        return False
    return True
