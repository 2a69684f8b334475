"""The slimmable model zoo and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sources import ModelFactory, is_converted
from .base import SlimmableNet
from .mobilenet import MobileNetV2, MobileNetV3Large
from .resnet_cifar import ResNetCifar
from .tiny_detector import TinyDetector


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
    "tiny_detector": TinyDetector,
}


def build_model(name: str, factory: ModelFactory | None = None, **kwargs: Any) -> SlimmableNet:
    """Build a slimmable model by name, at full width: one of the zoo (see ``ARCHITECTURES``), or a
    converted architecture (``torchvision:NAME``, ``timm:NAME``, or the user's ``pkg.module:factory``
    with ``factory`` given) rebuilt from the ``kwargs`` its :meth:`~SlimmableNet.describe` recorded.

    Raises ``ValueError`` naming the known architectures for an unknown name, and for arguments
    the architecture does not take.
    """
    if is_converted(name):
        from ..convert import rebuild

        return rebuild(name, kwargs, factory)
    key = name.lower().replace("-", "_")
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[key](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for architecture '{name}': {exc}") from None


__all__ = [
    "ARCHITECTURES",
    "MobileNetV2",
    "MobileNetV3Large",
    "ResNetCifar",
    "SlimmableNet",
    "TinyDetector",
    "build_model",
]
