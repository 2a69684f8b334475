"""Shared output helpers of the CLI: JSON to stdout, rich tables to the terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (machine-readable ``--json`` output)."""
    print(json.dumps(obj, indent=2))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table with the given column headers and rows (values formatted with str)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("id", "arch", "group", "name") else "left")
    for r in rows:
        table.add_row(*("-" if v is None else str(v) for v in r))
    Console().print(table)
