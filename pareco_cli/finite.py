"""Float options refuse nan and ±inf: every command's, found from its signature, so options added later too."""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

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
