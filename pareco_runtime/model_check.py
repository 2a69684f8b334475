"""Building a front's model only once its manifest is known to fit its weight file.

A manifest's ``architecture.kwargs`` size the model it names (a width, a class count, an input
size), and a stranger's manifest could make the builder allocate gigabytes before any check ran.
:func:`build_front_model` bounds every number in the kwargs, builds the architecture on torch's
``meta`` device (shapes and dtypes only, no memory; the modules it may create bounded by the
number of tensors in the weight file), compares every tensor's shape and dtype, and each point's
BN statistics, with the weight file's header (read without reading a tensor), and only then
builds the model for real, which then allocates exactly what the weight file holds.

A builder that computes with tensors while building (torchvision's RegNet derives its widths with
``torch.pow``) cannot run on the meta device; it is built for real under the same bounds and
checked after.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .manifest import check_input_size, front_header
from .models.base import BNStatsError
from .sources import ModelFactory, UserCodeError
from .untrusted import FormatError
from .weights_file import TensorInfo, WeightHeader

if TYPE_CHECKING:
    from .manifest import Front
    from .models.base import SlimmableNet

# No constructor argument of a classifier pareco slims comes near this: ImageNet-21k has 21,843
# classes, widths are multipliers or a few thousand channels, depths are tens of blocks.
MAX_KWARG_NUMBER = 1 << 16
# Modules a build may register per tensor of the weight file: the zoo registers 1.5-1.8 (modules,
# parameters and buffers together per state tensor), converted torchvision models 3.5-4.2 (ResNet-18,
# MobileNetV3-Small, EfficientNet-B0, DenseNet-121), as the conversion builds each layer twice.
_MODULES_PER_TENSOR = 8
_MODULES_SLACK = 1024
_FIT = "use the weight file trained with this manifest"


class _TooManyModules(Exception):
    """Raised inside a build that registers more modules than its budget allows."""


def build_front_model(front: Front, factory: ModelFactory | None = None) -> SlimmableNet:
    """``front``'s architecture at full width with fresh weights, built only once it is known to fit the
    front's weight file; every misfit is a one-line :class:`~pareco_runtime.untrusted.FormatError`.

    Checked before any real build: the weight file's header, with the BN statistics files of points
    added after training (:func:`~pareco_runtime.manifest.front_header`: each bound to it); every
    number in ``architecture.kwargs`` within ±:data:`MAX_KWARG_NUMBER` and its ``input_size`` within
    :func:`check_input_size`; then, on a shape-only build, the width space, the architecture the weight
    file records, every state tensor's name, shape and dtype, and each point's channels and BN
    statistics (complete, of the point's sizes and the BN layers' dtype). The message names the
    tensor that is wrong. ``factory``: the builder of the user's own architecture.
    """
    source = front.path or "manifest"
    header = front_header(front)
    _check_numbers(front.architecture.kwargs, "architecture.kwargs", source)
    budget = _MODULES_PER_TENSOR * header.tensor_count + _MODULES_SLACK
    try:
        with torch.device("meta"):
            shapes = _build(front, factory, budget, source)
    except FormatError:
        raise
    except Exception:  # the builder needs real tensor data (see the module docstring)
        model = _build(front, factory, budget, source)
        check_fit(model, front, header)
        return model
    check_fit(shapes, front, header)
    return _build(front, factory, budget, source)


def _check_numbers(value: Any, where: str, source: str | Path) -> None:
    """Every number in ``value`` within ±MAX_KWARG_NUMBER, and every ``input_size`` (the example input a
    build runs: a side in the zoo, ``[C, H, W]`` or ``[C, L]`` in a conversion's settings, each of its
    ``input_sizes``) within the input limits."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{where}.{key}", source)
            sides = [item] if isinstance(item, int) else item if isinstance(item, list) else []
            if key == "input_size" and all(type(side) is int for side in sides):
                check_input_size([1, item, item] if isinstance(item, int) else item, f"{where}.{key}", source)
            if key == "input_sizes" and isinstance(item, list):  # a conversion's several inputs
                for i, size in enumerate(item):
                    if isinstance(size, list) and all(type(side) is int for side in size):
                        check_input_size(size, f"{where}.{key}[{i}]", source)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]", source)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_KWARG_NUMBER:
        raise FormatError(
            f"{source}: {where} = {value} exceeds the {MAX_KWARG_NUMBER} pareco allows a constructor "
            "argument; use the manifest pareco wrote for this model"
        )


def _build(front: Front, factory: ModelFactory | None, budget: int, source: str | Path) -> SlimmableNet:
    """The architecture built in the current device context, registering at most ``budget`` modules."""
    arch = front.architecture
    try:
        with _module_budget(budget):
            model = arch.build(factory=factory)
    except UserCodeError:
        raise  # about the user's builder, not the manifest; on the meta device, retried for real
    except _TooManyModules:
        raise FormatError(
            f"{source}: architecture.kwargs make '{arch.arch}' build more than {budget} modules, more "
            f"than a weight file of its size holds; {_FIT}"
        ) from None
    except ValueError as exc:
        raise FormatError(f"{source}: {exc}") from None
    return model


@contextlib.contextmanager
def _module_budget(limit: int) -> Iterator[None]:
    """Raise :class:`_TooManyModules` from the build in this thread once it registers more than ``limit``
    modules (torch's global registration hook; other threads' modules are not counted)."""
    thread = threading.get_ident()
    count = 0

    def register(_parent: torch.nn.Module, _name: str, _module: torch.nn.Module | None) -> None:
        nonlocal count
        if threading.get_ident() == thread:
            count += 1
            if count > limit:
                raise _TooManyModules

    handle = torch.nn.modules.module.register_module_module_registration_hook(register)
    try:
        yield
    finally:
        handle.remove()


def check_fit(model: SlimmableNet, front: Front, header: WeightHeader) -> None:
    """Raise :class:`FormatError` at the first way ``header`` (a weight file) does not fit ``model`` (built,
    on any device, from ``front``): width space, input dtype, recorded architecture, state tensors, points."""
    arch = front.architecture
    source = front.path or "manifest"
    built, saved = model.space, front.width_space
    if (tuple(built.names), tuple(built.full)) != (tuple(saved.names), tuple(saved.full)):
        raise FormatError(
            f"{source}: its width space does not match architecture '{arch.arch}'; the manifest "
            "was edited or belongs to another model"
        )
    recorded = header.metadata.get("architecture")
    if recorded not in (None, arch.to_dict()):
        raise FormatError(
            f"{header.path}: weight file of another architecture ({recorded}) than its manifest "
            f"({arch.to_dict()}); {_FIT}"
        )
    served = front.dataset.input_dtype
    if model.input_dtypes[0] != served:
        raise FormatError(
            f"{source}: dataset.input_dtype is {served} but architecture '{arch.arch}' takes "
            f"{model.input_dtypes[0]} inputs; the manifest was edited or belongs to another model"
        )
    _check_state(model, header, arch.arch)
    for p in front.points:
        # A network without BatchNorm (a transformer) stores no statistics: nothing is missing then.
        per_module = header.bn_stats.get(p.id, None if model.bn_names else {})
        stats_path = header.stats_paths.get(p.id, header.path)
        if per_module is None or set(per_module) != set(model.bn_names):
            raise FormatError(
                f"{stats_path}: BN statistics of point '{p.id}' are missing or incomplete; "
                "re-train or re-export the model"
            )
        channels = model.space.channels(p.alpha)
        if channels != p.channels:
            raise FormatError(
                f"{source}: point '{p.id}' lists channels {p.channels} but its widths give "
                f"{channels}; the manifest was edited"
            )
        pairs = [(_shaped(mean), _shaped(var)) for mean, var in (per_module[n] for n in model.bn_names)]
        try:
            model.check_bn_stats(pairs, p.alpha)
        except BNStatsError as exc:
            raise FormatError(
                f"{stats_path}: BN statistics of point '{p.id}': {exc.what}; re-train or re-export the model"
            ) from None


def _check_state(model: SlimmableNet, header: WeightHeader, arch: str) -> None:
    own = model.state_dict()
    unknown = [k for k in header.state if k not in own]
    missing = [k for k in own if k not in header.state]
    for keys, what in ((missing, "lacks tensor"), (unknown, "has unexpected tensor")):
        if keys:
            raise FormatError(
                f"{header.path}: weights do not fit architecture '{arch}' (the file {what} '{keys[0]}'"
                f"{f' and {len(keys) - 1} more' if len(keys) > 1 else ''}); {_FIT}"
            )
    for key, tensor in own.items():
        info = header.state[key]
        if info.shape != tuple(tensor.shape) or info.dtype != tensor.dtype:
            raise FormatError(
                f"{header.path}: weights do not fit architecture '{arch}' (tensor '{key}' is "
                f"{_describe(info.dtype, info.shape)} in the file, the architecture needs "
                f"{_describe(tensor.dtype, tuple(tensor.shape))}); {_FIT}"
            )


def _describe(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    return f"{str(dtype).removeprefix('torch.')} of shape {shape}"


def _shaped(info: TensorInfo) -> torch.Tensor:
    """A meta tensor of ``info``'s dtype and shape: what the shape and dtype checks look at, no memory."""
    return torch.empty(info.shape, dtype=info.dtype, device="meta")
