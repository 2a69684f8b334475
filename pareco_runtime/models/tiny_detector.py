"""A small slimmable single-stage detector: conv-BN-ReLU layers down to stride 8, one per-cell head.

Built for ``pareco train --task detection``: it trains on a CPU in minutes at 64-128 px and its whole
graph slices and exports (torchvision's SSDlite and FCOS decode and suppress inside their forward,
which cannot be traced whole). Its output is the raw map of :mod:`pareco_runtime.detection`:
``(N, 5 + classes, S/8, S/8)``, objectness, box and class logits per cell, anchor-free on one level;
decoding and non-maximum suppression run outside the network (:func:`pareco_runtime.detection.detections`).

Width space: one dimension per layer of the backbone and one for the head's hidden layer (6); the
prediction layer's outputs are fixed (5 + classes).
"""

from __future__ import annotations

import torch
from torch import nn

from ..detection import BOX_CHANNELS
from .base import LayerBuilder, SlimmableNet, Slot

STRIDE = 8
# (channels, stride) of each backbone layer: three stride-2 layers bring 64 px to an 8 x 8 grid.
LAYERS = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1))
HEAD = 64


class ConvBNReLU(nn.Sequential):
    """A 3x3 conv, batch norm and ReLU."""

    def __init__(self, b: LayerBuilder, cin: Slot, cout: Slot, stride: int) -> None:
        super().__init__(b.conv(cin, cout, 3, stride), b.bn(cout), nn.ReLU(inplace=True))


class TinyDetectorPlain(nn.Module):
    """The forward pass of the tiny detector; slicing traces it, on plain layers, into a standalone graph."""

    backbone: nn.Module
    head: nn.Module
    predict: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.head(self.backbone(x)))


class TinyDetector(SlimmableNet, TinyDetectorPlain):
    """Slimmable anchor-free detector at stride 8 for square inputs whose side is a multiple of 8.

    ``width`` scales every layer's channels (16-32-32-64-64 and a 64-channel head at 1).
    """

    plain_class = TinyDetectorPlain

    def __init__(
        self,
        num_classes: int = 2,
        width: float = 1.0,
        low: float = 0.25,
        divisor: int | None = None,
        input_size: int = 64,
    ) -> None:
        super().__init__()
        if input_size < STRIDE or input_size % STRIDE:
            raise ValueError(
                f"tiny_detector needs an input side that is a multiple of {STRIDE}, got {input_size}; "
                f"train at a multiple of {STRIDE} (--image-size)"
            )
        if not width > 0 or any((c * width) % 1 for c, _ in LAYERS):
            raise ValueError(f"width must be positive and make every layer's channels whole, got {width}")
        self.arch = "tiny_detector"
        self.arch_kwargs = {
            "num_classes": num_classes,
            "width": width,
            "low": low,
            "divisor": divisor,
            "input_size": input_size,
        }
        b = LayerBuilder()
        prev = b.fixed(3)
        layers = []
        for i, (c, stride) in enumerate(LAYERS, start=1):
            dim = b.dim(f"layer{i}", int(c * width))
            layers.append(ConvBNReLU(b, prev, dim, stride))
            prev = dim
        self.backbone = nn.Sequential(*layers)
        hidden = b.dim("head", int(HEAD * width))
        self.head = ConvBNReLU(b, prev, hidden, 1)
        predict = b.conv(hidden, b.fixed(BOX_CHANNELS + num_classes), 1, bias=True)
        self.predict = predict
        self._init_weights()
        # The last layer starts small, so the first boxes are the cells' own (sigmoid(0) = 0.5).
        nn.init.normal_(predict.weight, std=0.01)
        self._finish(b, low, divisor, (3, input_size, input_size))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
