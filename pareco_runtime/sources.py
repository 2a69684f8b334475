"""Where a converted architecture comes from: torchvision and timm by name, the user's own by hand.

A manifest names its architecture as text, and text from a stranger must not choose code to run.
torchvision's classification and segmentation builders and timm's are an allow-list: the name must be one the
library itself registers, and it is built with random weights (``weights=None`` /
``pretrained=False``: the front's weight file supplies the weights). Any other name
(``pkg.module:factory``) is the user's code, which the runtime never imports: the app passes the
builder itself. The builder's keyword arguments are checked too (:func:`check_builder_kwargs`): a
manifest sizes the network, it never says where weights come from.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .untrusted import first_line

ModelFactory = Callable[..., nn.Module]
LIBRARIES = ("torchvision", "timm")

# What a manifest may pass each library's builder: the network's shape (classes, widths, depth, dropout),
# nothing else. A stranger's ``checkpoint_path``, ``pretrained_cfg_overlay`` or ``weights`` would make
# the library read or download a file of their choosing, and the weight file supplies the weights anyway.
LIBRARY_KWARGS = {
    "torchvision": frozenset(
        {"num_classes", "dropout", "width_mult", "groups", "width_per_group", "zero_init_residual",
         "replace_stride_with_dilation", "stochastic_depth_prob", "init_weights", "aux_logits",
         "transform_input", "inverted_residual_setting", "round_nearest"}
    ),
    "timm": frozenset(
        {"num_classes", "in_chans", "drop_rate", "drop_path_rate", "drop_block_rate", "global_pool"}
    ),
}  # fmt: skip
# Arguments that say where weights come from: never passed, not even to a user's factory that takes them.
WEIGHT_SOURCES = frozenset(
    {"pretrained", "weights", "weights_backbone", "checkpoint_path", "pretrained_cfg",
     "pretrained_cfg_overlay", "cache_dir", "checkpoint", "path", "file", "url"}
)  # fmt: skip
_FILE_SUFFIXES = ("_path", "_file", "_dir", "_url", "_checkpoint")


class UserCodeError(ValueError):
    """The user's own code (a builder they named) failed to import or to build; one line naming it and
    the exception it raised (chained, so ``--debug`` shows where in their code)."""


def _user_code_failed(what: str, exc: Exception) -> UserCodeError:
    return UserCodeError(
        f"{what} raised {type(exc).__name__}: {first_line(exc)}; fix it in your code (--debug shows where)"
    )


def _qualified(factory: ModelFactory) -> str:
    """``pkg.module:function``, as the user names a factory."""
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__name__)}"


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
    ``model_kwargs`` must pass :func:`check_builder_kwargs` first (ValueError naming the argument).
    """
    check_builder_kwargs(arch, model_kwargs, factory)
    library, _, name = arch.partition(":")
    if library == "torchvision" and factory is None:
        tv = _require("torchvision", "pareco[vision]")
        if name in tv.models.list_models(module=tv.models.segmentation):
            # A segmentation builder fetches ImageNet weights for its backbone unless told not to.
            return tv.models.get_model(name, weights=None, weights_backbone=None, **model_kwargs)
        if name not in tv.models.list_models(module=tv.models):
            raise ValueError(
                f"architecture '{arch}': torchvision has no classification model '{name}'; choose one of "
                "torchvision.models.list_models(), e.g. resnet18 (or a segmentation model, e.g. "
                "lraspp_mobilenet_v3_large)"
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
    qualified = _qualified(factory)
    named = f"the factory {qualified}" + ("" if qualified == arch else f" of architecture '{arch}'")
    try:
        module = factory(**model_kwargs)
    except Exception as exc:
        raise _user_code_failed(named, exc) from exc
    if not isinstance(module, nn.Module):
        raise UserCodeError(
            f"{named} returned {type(module).__name__}, not an nn.Module; make it return the network"
        )
    return module


def check_builder_kwargs(
    arch: str,
    model_kwargs: Mapping[str, Any],
    factory: ModelFactory | None = None,
    where: str = "architecture.kwargs.model",
) -> None:
    """Refuse, in one ValueError naming ``where.KEY``, a builder argument a manifest may not give.

    A library's builder takes only its :data:`LIBRARY_KWARGS`; a user's ``factory`` only the keyword
    parameters it declares (any, when it is not at hand). Never passed to any: a name of
    :data:`WEIGHT_SOURCES` or ending in ``_path``/``_file``/``_dir``/``_url``/``_checkpoint``, and
    no value that is a file path or URL (a string holding ``/``, ``\\`` or ``:``).
    """
    library = arch.partition(":")[0]
    allowed = LIBRARY_KWARGS.get(library) if factory is None else _parameters(factory)
    for key, value in model_kwargs.items():
        if key in WEIGHT_SOURCES or key.endswith(_FILE_SUFFIXES) or _names_a_file(value):
            why = "it would point the builder at a file, and the front's weight file supplies the weights"
        elif allowed is not None and key not in allowed:
            takes = ", ".join(sorted(allowed)) or "no arguments"
            why = f"{arch}'s builder takes only {takes} from a manifest"
        else:
            continue
        raise ValueError(f"{where}.{key}: {why}; remove it from the manifest")


def _parameters(factory: ModelFactory) -> frozenset[str] | None:
    """The keyword parameters ``factory`` declares (and ``num_classes``, all pareco itself passes, where it
    takes ``**kwargs``), or None where its signature cannot be read."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    anything = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
    return frozenset({p.name for p in params if p.kind in named} | ({"num_classes"} if anything else set()))


def _names_a_file(value: Any) -> bool:
    """Whether ``value`` holds a string that could be a file path or URL (at any depth)."""
    if isinstance(value, str):
        return any(c in value for c in "/\\:")
    if isinstance(value, Mapping):
        return any(_names_a_file(k) or _names_a_file(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_names_a_file(v) for v in value)
    return False


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
    except Exception as exc:  # the module's own code failed while it was imported
        raise _user_code_failed(f"{flag} {spec}: importing {module_name}", exc) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{flag} {spec}: {module_name} has no callable '{attr}'")
    return factory


def original_from_user(arch: str, model_kwargs: dict[str, Any]) -> nn.Module:
    """:func:`original_module` for a name the user typed (a flag, not a manifest): their own
    ``pkg.module:factory`` is imported."""
    own_code = arch.partition(":")[0] not in LIBRARIES
    return original_module(arch, model_kwargs, import_factory(arch, "--arch") if own_code else None)
