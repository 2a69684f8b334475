"""The slimmable model zoo and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import SlimmableNet
from .mobilenet import MobileNetV2, MobileNetV3Large
from .resnet_cifar import ResNetCifar


def _resnet(depth: int) -> Callable[..., SlimmableNet]:
    def make(**kw: Any) -> SlimmableNet:
        return ResNetCifar(depth=depth, **kw)

    make.__doc__ = (
        f"Slimmable ResNet{depth} for CIFAR (kwargs: width, num_classes, low, divisor, input_size)."
    )
    return make


ARCHITECTURES: dict[str, Callable[..., SlimmableNet]] = {
    **{f"resnet{d}": _resnet(d) for d in (20, 32, 44, 56)},
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3_large": MobileNetV3Large,
}


def build_model(name: str, **kwargs: Any) -> SlimmableNet:
    """Build a slimmable model of the zoo by name (see ``ARCHITECTURES``), at full width.

    Raises ``ValueError`` naming the known architectures for an unknown name, and for arguments
    the architecture does not take.
    """
    key = name.lower().replace("-", "_")
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[key](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for architecture '{name}': {exc}") from None


__all__ = ["ARCHITECTURES", "MobileNetV2", "MobileNetV3Large", "ResNetCifar", "SlimmableNet", "build_model"]
