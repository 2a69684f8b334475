"""``pareco train``: train a slimmable model and write its weight file and front manifest.

The run's settings are not listed here: one option per field of :class:`training.config.TrainConfig`,
with the field's type, default, flag and help, joins the options of this function's own signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand

from training.config import TrainConfig

from .output import print_json

if TYPE_CHECKING:
    # typer carries its own copy of click (no click dependency); its commands take its classes.
    from typer._click import Context, HelpFormatter


def train(
    *,
    ctx: typer.Context,
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output directory (model.safetensors, model.front.json)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out from its last checkpoint, with the settings in its run.json "
        "(settings given as well must equal them).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a different run in --out."),
    device: str | None = typer.Option(
        None, "--device", metavar="cpu|cuda", help="cpu or cuda (default: cuda when present)."
    ),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", metavar="DIR", help="Decoded-dataset cache (default ~/.cache/pareco)."
    ),
    log_every: int = typer.Option(
        20,
        "--log-every",
        metavar="N",
        help="Steps between JSON log lines, and between progress lines when stderr is not a terminal.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the end-of-run summary as JSON (and nothing else) on stdout."
    ),
    **settings: Any,
) -> None:
    """Train one slimmable model; writes OUT/model.safetensors and OUT/model.front.json.

    An image classifier ranked by top-1, with --task segmentation a per-pixel classifier ranked by
    mIoU, or with --task detection an object detector ranked by mAP@0.5. Progress goes to stderr; the run ends with a summary and the next commands to type on stdout.
    """
    from training.distributed import launched_rank
    from training.loop import train as run
    from training.report import run_summary, summary_lines
    from training.run_dir import RUN_FILES, resume_settings

    t0 = time.perf_counter()
    cfg = resume_settings(out, settings, typed_settings(ctx)) if resume else TrainConfig(**settings)
    manifest = run(
        cfg,
        out,
        resume=resume,
        force=force,
        device=device,
        cache_dir=cache_dir,
        log_every=log_every,
    )
    if launched_rank() != 0:
        return
    summary = run_summary(manifest, [out / name for name in RUN_FILES], time.perf_counter() - t0)
    if as_json:
        print_json(summary)
    else:
        typer.echo("\n".join(summary_lines(summary)))


def typed_settings(ctx: typer.Context) -> set[str]:
    """The TrainConfig fields whose flags were given on the command line (typer fills in the others'
    defaults, which ``--resume`` replaces with the run's saved values)."""
    given = set()
    for f in dataclasses.fields(TrainConfig):
        source = ctx.get_parameter_source(f.name)
        # Compared by name: typer ships its own copy of click, whose ParameterSource is another enum.
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.add(f.name)
    return given


# The sections of ``pareco train --help``, by parameter name (settings and this command's own options).
HELP_SECTIONS: dict[str, tuple[str, ...]] = {
    "Basic": ("task", "arch", "data", "algorithm", "epochs", "batch_size", "lr", "seed", "out", "resume", "force", "as_json"),
    "Model": ("init", "low", "group_low", "pin", "width", "width_factor", "divisor", "torchvision_widths"),
    "Optimiser": ("momentum", "weight_decay", "schedule", "warmup_epochs", "label_smoothing"),
    "Front": ("candidates", "calib_batches", "calib_batch_size", "select_fraction", "epoch_eval"),
    "PareCO / TwoStage (BO)": (
        "cost", "samples", "history_size", "epsilon", "lambda_sampling", "cost_model", "warmup_configs",
        "probe_batch", "remeasure", "distill_warmup",
    ),
    "Data": ("image_size", "num_classes", "cache_dir"),
    "System": ("device", "threads", "log_every", "help"),
}  # fmt: skip
_SECTION_OF = {name: title for title, names in HELP_SECTIONS.items() for name in names}
# Value names where the type alone ("TEXT") would not say what to give.
_METAVARS = {
    "arch": "ARCH",
    "init": "STATE_DICT",
    "data": "PATH|digits",
    "group_low": "PATTERN=W,..",
    "pin": "PATTERNS",
    "cost": "macs|latency@FILE",
}
EXAMPLES = """Examples:

\b
  pareco train --data my_images/ --epochs 10 --out runs/mine
  pareco train --arch torchvision:resnet18 --init resnet18.pt --data photos.tar.gz \\
      --algorithm pareco --epochs 30 --out runs/r18 --threads 2
  pareco train --task segmentation --data scenes/ --image-size 64 --epochs 20 --out runs/seg
"""


class SectionedCommand(TyperCommand):
    """A command whose ``--help`` lists its options under the titles of :data:`HELP_SECTIONS`."""

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The options section by section, in :data:`HELP_SECTIONS` order."""
        records: dict[str, list[tuple[str, str]]] = {title: [] for title in HELP_SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                records[_SECTION_OF[param.name or ""]].append(record)
        for title, rows in records.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _metavar(name: str, kind: Any, choices: tuple[str, ...] | None) -> str | None:
    if choices:
        return "|".join(choices)
    base = typing.get_args(kind)[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) else kind
    if base is bool:
        return None
    return _METAVARS.get(name) or {int: "N", float: "X"}.get(base, "TEXT")


def _setting_options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, defaulting to a typer option with its flag and help."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        option = typer.Option(
            f.default,
            TrainConfig.flag(f.name),
            help=f.metadata["help"],
            metavar=_metavar(f.name, hints[f.name], f.metadata["choices"]),
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[f.name]
            )
        )
    return params


# typer reads a command's options from its signature: the settings first, then --out and the rest.
train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *_setting_options(),
        *(p for p in inspect.signature(train).parameters.values() if p.kind is not p.VAR_KEYWORD),
    ]
)
