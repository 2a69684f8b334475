"""The ``pareco`` typer application: one command per module of this package."""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from . import bench_cmd, export_cmd, flops, front_cmds, runtime_cmds, specialize_cmd, train

Command = TypeVar("Command", bound=Callable[..., Any])


def finite_floats(command: Command) -> Command:
    """``command`` refusing nan and ±inf in every float option, in one ValueError naming the flag, before it
    runs: no option of pareco's means anything at them, and comparisons with nan are all false (an
    ``--atol nan`` passed every parity check)."""
    flags = _float_flags(command)

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for name, flag in flags.items():
            value = kwargs.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag} {value}: not a finite number; give a number such as 0.5")
        return command(*args, **kwargs)

    return typing.cast(Command, checked)


def _float_flags(command: Callable[..., Any]) -> dict[str, str]:
    """{parameter name: its flag} of the options of ``command`` that take a float (or nothing)."""
    flags = {}
    for name, param in inspect.signature(command, eval_str=True).parameters.items():
        annotation, infos = param.annotation, [param.default]
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *metadata = typing.get_args(annotation)
            infos += metadata
        if float not in (annotation, *typing.get_args(annotation)):
            continue
        decls = [
            d for info in infos if isinstance(info, typer.models.OptionInfo) for d in info.param_decls or ()
        ]
        flags[name] = next((d for d in decls if d.startswith("--")), f"--{name.replace('_', '-')}")
    return flags


app = typer.Typer(
    name="pareco",
    help="Slimmable networks: train one model, pick sub-networks under budgets, export and benchmark them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain click help: rich's boxes showed flags as "<bool>", lists as "<list[str]>" and turned
    # "pkg.module:factory:" into an emoji
    rich_markup_mode=None,
)


# --debug is read from argv by pareco_cli.main.main, which owns error handling; declared here for --help.
@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    del debug


# Every command refuses nan and ±inf in its float options (finite_floats), those it gains later too.
app.command("train", cls=train.SectionedCommand, epilog=train.EXAMPLES)(finite_floats(train.train))
app.command("select")(finite_floats(runtime_cmds.select))
app.command("show")(finite_floats(runtime_cmds.show))
app.command("flops")(finite_floats(flops.flops))
app.command("export")(finite_floats(export_cmd.export))
app.command("bench", cls=bench_cmd.BenchCommand, epilog=bench_cmd.EPILOG)(finite_floats(bench_cmd.bench))
app.command("eval")(finite_floats(front_cmds.eval_front))
app.command("calibrate")(finite_floats(front_cmds.calibrate))
app.command("specialize")(finite_floats(specialize_cmd.specialize))
