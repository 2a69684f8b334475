"""``pareco flops``: the cost of any config of any architecture, no training needed."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import typer

from .output import print_json, print_table

if TYPE_CHECKING:
    from pareco_runtime.models.base import SlimmableNet


def parse_alpha(text: str) -> list[float]:
    """Parse ``"0.5,0.75,..."`` into finite floats; ValueError naming the bad item (nan and inf too)."""
    out = []
    for item in text.split(","):
        try:
            out.append(float(item))
        except ValueError:
            out.append(math.nan)
        if not math.isfinite(out[-1]):
            raise ValueError(f"--alpha: '{item.strip()}' is not a finite number; give comma-separated widths")
    return out


def _converted(
    arch: str, num_classes: int | None, input_size: int | None, divisor: int | None
) -> SlimmableNet:
    """``arch`` converted by make_slimmable at ``input_size`` (default 224), as ``pareco train`` would."""
    import warnings

    import torch

    from pareco_runtime import make_slimmable
    from pareco_runtime.sources import original_from_user

    model_kwargs = {} if num_classes is None else {"num_classes": num_classes}
    size = input_size or 224
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ops it pins show in the table: their groups are absent
        return make_slimmable(
            original_from_user(arch, model_kwargs), torch.zeros(1, 3, size, size), divisor=divisor, arch=arch,
            model_kwargs=model_kwargs,
        )  # fmt: skip


def flops(
    arch: str = typer.Option(
        ...,
        "--arch",
        metavar="ARCH",
        help="Architecture: resnet20/32/44/56, mobilenet_v2, mobilenet_v3_large, or a CNN made slimmable: "
        "torchvision:NAME, timm:NAME, pkg.module:factory.",
    ),
    width: float | None = typer.Option(
        None, "--width", metavar="W", help="Uniform width multiplier for every group."
    ),
    alpha: str | None = typer.Option(
        None, "--alpha", metavar="A1,..,AK", help="Per-group widths, comma-separated."
    ),
    width_mult: float | None = typer.Option(
        None,
        "--width-mult",
        metavar="W",
        help="torchvision's network at this width_mult (mobilenet_v2: e.g. 0.5 is mobilenet_v2(width_mult=0.5)).",
    ),
    divisor: int | None = typer.Option(
        None, "--divisor", metavar="N", help="Round channels to multiples of this."
    ),
    num_classes: int | None = typer.Option(None, "--num-classes", metavar="N", help="Classes of the head."),
    input_size: int | None = typer.Option(
        None, "--input-size", metavar="PX", help="Input resolution (default per arch)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """MACs (the field's FLOPs), parameters and per-group channels of one config."""
    from pareco_runtime import build_model
    from pareco_runtime.sources import is_converted

    if sum(v is not None for v in (width, alpha, width_mult)) != 1:
        raise ValueError("give exactly one of --width W, --alpha a1,a2,... or --width-mult W")
    for flag, value in (("--num-classes", num_classes), ("--input-size", input_size), ("--divisor", divisor)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be a positive integer")
    kwargs: dict[str, Any] = {  # build_model's keyword arguments
        k: v
        for k, v in (("divisor", divisor), ("num_classes", num_classes), ("input_size", input_size))
        if v is not None
    }
    try:
        model = (
            _converted(arch, num_classes, input_size, divisor)
            if is_converted(arch)
            else build_model(arch, **kwargs)
        )
    except RuntimeError as exc:  # torch's own failure of the example forward, e.g. an input too small
        from pareco_runtime.untrusted import first_line

        raise ValueError(
            f"--arch {arch}: cannot run it at --input-size {input_size or 'default'} ({first_line(exc)}); "
            "use a larger --input-size"
        ) from None
    if width_mult is not None:
        config = model.torchvision_config(width_mult)
    else:
        config = model.space.uniform(width) if width is not None else parse_alpha(alpha or "")
    model.space.validate(config)
    macs, params, channels = model.macs(config), model.params(config), model.channels(config)
    if as_json:
        print_json(
            {
                "arch": model.arch,
                "alpha": config,
                "macs": macs,
                "mflops": macs / 1e6,
                "params": params,
                "channels": dict(zip(model.space.names, channels)),
                "input_size": list(model.input_size),
            }
        )
        return
    rows = [
        (n, f"{a:.3f}", c, f) for n, a, c, f in zip(model.space.names, config, channels, model.space.full)
    ]
    print_table(
        f"{model.arch} @ {tuple(model.input_size)}: {macs / 1e6:.2f} MFLOPs (MACs), {params / 1e6:.3f} M params",
        ["group", "width", "channels", "full"],
        rows,
    )
