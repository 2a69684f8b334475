"""``pareco train``: train a slimmable model and write its weight file and front manifest.

The run's settings are not listed here: one option per field of :class:`training.config.TrainConfig`,
with the field's type, default, flag and help, joins the options of this function's own signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any

import typer

from training.config import TrainConfig


def train(
    *,
    out: Path = typer.Option(..., "--out", help="Output directory (model.safetensors, model.front.json)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a different run in --out."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Decoded-dataset cache (default ~/.cache/pareco)."
    ),
    log_every: int = typer.Option(20, "--log-every", help="Steps between JSON log lines."),
    **settings: Any,
) -> None:
    """Train one slimmable model; writes OUT/model.safetensors and OUT/model.front.json."""
    from training.loop import train as run

    run(
        TrainConfig(**settings),
        out,
        resume=resume,
        force=force,
        device=device,
        cache_dir=cache_dir,
        log_every=log_every,
    )


def _setting_options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, defaulting to a typer option with its flag and help."""
    types = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        text = f.metadata["help"]
        if f.metadata["choices"]:
            text += f" One of: {', '.join(f.metadata['choices'])}."
        option = typer.Option(f.default, TrainConfig.flag(f.name), help=text)
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=types[f.name]
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
