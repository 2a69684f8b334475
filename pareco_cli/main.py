"""Entry point of the ``pareco`` command: registers the commands and turns errors into one line.

Any ``ValueError`` / ``OSError`` raised by a command (the project's errors are ValueError
subclasses with a message naming the problem and the fix) is printed as ``error: <message>`` on
stderr with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from . import bench_cmd, export_cmd, flops, runtime_cmds, train

app = typer.Typer(
    name="pareco",
    help="Slimmable networks: train one model, pick sub-networks under budgets, export and benchmark them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


app.command("train")(train.train)
app.command("select")(runtime_cmds.select)
app.command("show")(runtime_cmds.show)
app.command("flops")(flops.flops)
app.command("export")(export_cmd.export)
app.command("bench")(bench_cmd.bench)


def main() -> None:
    """Run the CLI; exit 2 with a one-line message on bad input."""
    try:
        app()
    except (ValueError, OSError, KeyError) as exc:
        if _state["debug"] or "--debug" in sys.argv:
            raise
        text = str(exc).strip()
        typer.echo(f"error: {text.splitlines()[0] if text else type(exc).__name__}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
