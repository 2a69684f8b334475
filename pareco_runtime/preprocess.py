"""The evaluation transform a front's network expects, recorded in its manifest and applied by the runtime.

A :class:`Preprocess` turns an RGB image (a PIL image, or a uint8 tensor ``(3, H, W)`` /
``(H, W, 3)``) into the normalised float32 batch ``(1, 3, H, W)`` the network was evaluated on:
resize (the whole image to the input size, or its shorter side to ``resize`` and then a centre
crop of the input size), scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel.
Resizing is torch's antialiased bilinear interpolation of the uint8 pixels, exactly what
torchvision's ``Resize`` does to a uint8 tensor; PIL's bilinear resize, which training uses when it
decodes small images, differs from it by a few grey levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

MODES = ("exact", "shorter_side")


@dataclass(frozen=True)
class Preprocess:
    """How images become network inputs: ``mode`` "exact" resizes the whole image to ``size`` (H, W);
    "shorter_side" resizes the shorter side to ``resize`` (aspect kept) and centre-crops ``size``."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "exact"
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocess: unknown resize mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.mode == "shorter_side" and (self.resize is None or self.resize < min(self.size)):
            raise ValueError(
                f"preprocess: a shorter-side resize needs resize >= the crop {self.size}, got {self.resize}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``dataset.preprocess`` object (mean and std stay in ``dataset``)."""
        return {
            "mode": self.mode,
            "resize": self.resize,
            "size": list(self.size),
            "interpolation": "bilinear",
            "channels": "RGB",
            "scale": 255,
        }

    def describe(self) -> dict[str, Any]:
        """The whole transform, for files that travel without the manifest (exports): what an app
        does to an RGB image to get the network's input, step by step, in JSON-ready values."""
        h, w = self.size
        exact = self.mode == "exact"
        return {
            "input_size": [len(self.mean), h, w],
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "RGB",
            "resize": {
                "mode": self.mode,
                "size": [h, w] if exact else self.resize,
                "interpolation": "bilinear",
                "antialias": True,
            },
            "crop": None if exact else {"mode": "center", "size": [h, w]},
            "pixel_range": [0, 255],
            "scale": 255,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "(pixel / scale - mean) / std, per channel",
        }

    @classmethod
    def from_dataset(cls, dataset: Mapping[str, Any]) -> Preprocess:
        """The transform of a manifest's ``dataset``; without a ``preprocess`` object (older manifests)
        the whole image is resized to the input size."""
        size = (int(dataset["input_size"][1]), int(dataset["input_size"][2]))
        spec = dataset.get("preprocess") or {}
        return cls(
            size=size,
            mean=tuple(float(v) for v in dataset["mean"]),
            std=tuple(float(v) for v in dataset["std"]),
            mode=str(spec.get("mode", "exact")),
            resize=spec.get("resize"),
        )

    def __call__(self, image: Any) -> torch.Tensor:
        """The normalised ``(1, 3, H, W)`` float32 input for ``image`` (ValueError naming what is wrong)."""
        x = _as_uint8_chw(image).unsqueeze(0)
        if self.mode == "exact":
            x = _resize(x, self.size)
        else:
            assert self.resize is not None
            h, w = x.shape[-2:]
            short = self.resize
            # torchvision's rule: the shorter side to ``resize``, the longer one scaled and floored.
            x = _resize(x, (short, int(short * w / h)) if h <= w else (int(short * h / w), short))
            top = round((x.shape[-2] - self.size[0]) / 2.0)
            left = round((x.shape[-1] - self.size[1]) / 2.0)
            x = x[..., top : top + self.size[0], left : left + self.size[1]]
        x = x.float() / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    # On the uint8 pixels, as torchvision resizes a uint8 image (a float resize differs by a grey level).
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def _as_uint8_chw(image: Any) -> torch.Tensor:
    """An RGB image as a uint8 ``(3, H, W)`` tensor: PIL images read without importing PIL."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(
                f"image tensor of dtype {image.dtype}; give uint8 pixels (0-255), e.g. torchvision.io.read_image"
            )
        if image.dim() == 3 and image.shape[0] == 3:
            return image
        if image.dim() == 3 and image.shape[-1] == 3:
            return image.permute(2, 0, 1)
        raise ValueError(
            f"image tensor of shape {tuple(image.shape)}; give an RGB image as (3, H, W) or (H, W, 3)"
        )
    if hasattr(image, "convert") and hasattr(image, "tobytes") and hasattr(image, "size"):
        rgb = image.convert("RGB")
        w, h = rgb.size
        return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)
    raise ValueError(
        f"cannot read an image from a {type(image).__name__}; give a PIL image or a uint8 tensor (3, H, W)"
    )


def is_image(input_size: Sequence[int]) -> bool:
    """Whether a network input of ``input_size`` (without the batch) is an image, ``[C, H, W]``, that
    :class:`Preprocess` makes; ``[C, L]`` sequences (audio features) are prepared by the app."""
    return len(input_size) == 3


def describe_inputs(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """What exported files carry about their input: :meth:`Preprocess.describe` of an image network,
    else the input's shape and per-channel normalisation (the features themselves are the app's)."""
    if is_image(dataset["input_size"]):
        return Preprocess.from_dataset(dataset).describe()
    return {
        "input_size": [int(v) for v in dataset["input_size"]],
        "layout": "NCL",
        "dtype": "float32",
        "mean": [float(v) for v in dataset["mean"]],
        "std": [float(v) for v in dataset["std"]],
        "formula": "(value - mean) / std, per channel",
    }
