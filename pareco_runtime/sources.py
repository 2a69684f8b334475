"""Where a converted architecture comes from: torchvision and timm by name, the user's own by hand.

A manifest names its architecture as text, and text from a stranger must not choose code to run.
torchvision's and timm's classification builders are an allow-list: the name must be one the
library itself registers, and it is built with random weights (``weights=None`` /
``pretrained=False``: the front's weight file supplies the weights). Any other name
(``pkg.module:factory``) is the user's code, which the runtime never imports: the app passes the
builder itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

ModelFactory = Callable[..., nn.Module]
LIBRARIES = ("torchvision", "timm")


def is_converted(arch: str) -> bool:
    """True for the names of architectures made by :func:`~pareco_runtime.make_slimmable` (they hold a colon)."""
    return ":" in arch


def _require(library: str, extra: str) -> Any:
    try:
        return importlib.import_module(library)
    except ModuleNotFoundError:
        raise ValueError(f"architecture '{library}:...' needs {library}: pip install '{extra}'") from None


def original_module(
    arch: str, model_kwargs: dict[str, Any], factory: ModelFactory | None = None
) -> nn.Module:
    """The original (not yet slimmable) module of converted architecture ``arch``, randomly initialised.

    ``torchvision:NAME`` / ``timm:NAME`` come from the library's own registry; anything else needs
    ``factory`` (called as ``factory(**model_kwargs)``), else ``ValueError`` saying how to pass it.
    """
    library, _, name = arch.partition(":")
    if library == "torchvision" and factory is None:
        tv = _require("torchvision", "pareco[vision]")
        known = tv.models.list_models(module=tv.models)
        if name not in known:
            raise ValueError(
                f"architecture '{arch}': torchvision has no classification model '{name}'; "
                f"choose one of torchvision.models.list_models(), e.g. resnet18"
            )
        return tv.models.get_model(name, weights=None, **model_kwargs)
    if library == "timm" and factory is None:
        timm = _require("timm", "pareco[timm]")
        if name not in timm.list_models():
            raise ValueError(f"architecture '{arch}': timm has no model '{name}'; see timm.list_models()")
        return timm.create_model(name, pretrained=False, **model_kwargs)
    if factory is None:
        raise ValueError(
            f"architecture '{arch}' is the user's own code, which pareco never imports on a "
            f"manifest's word; pass the builder: SlimmableRuntime.load(path, model=<factory>), "
            f"or --model {arch} on the command line"
        )
    module = factory(**model_kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"architecture '{arch}': the factory returned {type(module).__name__}, not an nn.Module"
        )
    return module


def import_factory(spec: str, flag: str = "--model") -> ModelFactory:
    """The callable named ``pkg.module:function``, imported: only for a name the user typed themselves
    (``flag`` names where, in errors)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or module_name in LIBRARIES:
        raise ValueError(f"{flag} {spec}: give the builder as pkg.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{flag} {spec}: cannot import {module_name} ({exc}); check the name and PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{flag} {spec}: {module_name} has no callable '{attr}'")
    return factory


def original_from_user(arch: str, model_kwargs: dict[str, Any]) -> nn.Module:
    """:func:`original_module` for a name the user typed (a flag, not a manifest): their own
    ``pkg.module:factory`` is imported."""
    own_code = arch.partition(":")[0] not in LIBRARIES
    return original_module(arch, model_kwargs, import_factory(arch, "--arch") if own_code else None)
