"""The datasets that need no files: scikit-learn's digits and seeded synthetic images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DataError, Holdout
from .memory import TensorData, _tensor_data
from .order import _generator

_SYNTHETIC_DEFAULT = (512, 10)


def _digits(image_size: int, split: Holdout, device: torch.device) -> TensorData:
    """scikit-learn's bundled 8x8 digits, scaled to 0..255, upsampled once, grey replicated to RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (torch.from_numpy(digits.images).float() * (255 / 16)).round()
    big = F.interpolate(small[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    names = [str(i) for i in range(10)]
    return _tensor_data("digits", (images, labels), None, names, split, device)


def _synthetic(spec: str, image_size: int, split: Holdout, device: torch.device) -> TensorData:
    """``synthetic[:N:C]``: N noisy images of C classes, each class a smooth colour pattern of its own."""
    fields = spec.split(":")[1:]
    try:
        n, c = (int(f) for f in fields) if fields else _SYNTHETIC_DEFAULT
    except ValueError:
        raise DataError(
            f"'{spec}' is not a synthetic spec; write 'synthetic' or 'synthetic:N:C' (integers)"
        ) from None
    if c < 2 or n < c:
        raise DataError(f"'{spec}': need at least 2 classes and one image per class (N >= C >= 2)")
    gen = _generator("synthetic", n, c, image_size, split.seed)
    patterns = torch.rand(c, 3, 4, 4, generator=gen)
    patterns = F.interpolate(patterns, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.randperm(n, generator=gen) % c
    noise = torch.randn(n, 3, image_size, image_size, generator=gen)
    images = (48 + 160 * patterns[labels] + 24 * noise).round().clamp(0, 255).to(torch.uint8)
    names = [f"class{i}" for i in range(c)]
    return _tensor_data("synthetic", (images, labels), None, names, split, device)
