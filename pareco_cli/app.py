"""The ``pareco`` typer application: one command per module of this package."""

from __future__ import annotations

import typer

from . import bench_cmd, export_cmd, flops, front_cmds, runtime_cmds, specialize_cmd, train
from .finite import finite_floats

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
