"""MkDocs hook: the CLI reference page (``docs/cli.md``) generated from the command definitions.

At build time the marker ``<!-- pareco-cli-reference -->`` in ``cli.md`` is replaced by a table of
every command and, per command, its ``--help`` exactly as ``pareco`` prints it (click's plain help,
88 columns, to fit the page). The commands are read from the click tree of ``pareco_cli.app`` at build time, groups
walked recursively, so a command added, removed or split into subcommands appears as it is without
editing the page. The checkout being built is put first on ``sys.path``, so its code is described,
not an installed copy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- pareco-cli-reference -->"
WIDTH = 88


def _commands(command: Any, ctx: Any, path: list[str]) -> list[tuple[list[str], Any, Any]]:
    """(name path, command, context) of ``command`` and every visible command below it, in order.

    Duck-typed (a group lists commands; a command that also takes subcommands, as ``pareco bench``
    does, holds them in ``subcommands``): typer carries its own copy of click, whose classes are not
    ``click.Group``."""
    found = [(path, command, ctx)]
    if hasattr(command, "list_commands"):
        subs = {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}
        parent, prefix = ctx, ""
    else:  # named after the command, beside it, as the command itself dispatches them
        subs = dict(getattr(command, "subcommands", {}))
        parent, prefix = ctx.parent, f"{ctx.info_name} "
    for name, sub in subs.items():
        if sub is None or sub.hidden:
            continue
        sub_ctx = sub.context_class(
            sub, info_name=prefix + name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
        )
        found += _commands(sub, sub_ctx, [*path, name])
    return found


def _anchor(path: list[str]) -> str:
    return "-".join(path)


def _summary(command: Any) -> str:
    """The first paragraph of a command's help, on one line (click's short help stops at "e.g.")."""
    text = " ".join((command.help or "").strip().split("\n\n")[0].split())
    return text.replace("|", "\\|")


def cli_reference(app: Any = None) -> str:
    """The Markdown of the CLI reference of ``app`` (default: pareco's): a summary table, then each
    command's ``--help``."""
    import typer

    if app is None:
        from pareco_cli.app import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="pareco", terminal_width=WIDTH, max_content_width=WIDTH)
    commands = _commands(root, root_ctx, ["pareco"])
    rows = ["| command | what it does |", "|---|---|"]
    sections = []
    for path, command, ctx in commands:
        name = " ".join(path)
        rows.append(f"| [`{name}`](#{_anchor(path)}) | {_summary(command)} |")
        level = "#" * min(2 + max(len(path) - 2, 0), 4)
        sections.append(
            f"{level} {name} {{#{_anchor(path)}}}\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n"
        )
    return "\n".join(rows) + "\n\n" + "\n".join(sections)


def on_config(config: Any, **kwargs: Any) -> Any:
    """Put the checkout being built first on ``sys.path`` (its ``pareco_cli``, not an installed one)."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the marker of the CLI page with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())
