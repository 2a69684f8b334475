"""Slimmable ResNet for CIFAR (He et al. 2016, option-A shortcuts), depth 6n+2, width factor k.

Width space (PareCO, Appendix A): 6 dimensions in [0.316, 1], per stage one width for the layers
joined by residual adds (stem or previous stage output, every block's second conv) and one for the
blocks' inner convs.

Shortcut between stages: the parameter-free option-A shortcut subsamples by 2 and then makes the
channel count match the stage's residual width. When the next stage is wider it appends zero
channels (as in the original); when a sampled config makes it narrower, it keeps the first
channels and drops the rest, the same "first k channels" rule every slimmable layer follows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import _Slim
from .base import LayerBuilder, SlimmableNet, Slot


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: spatial subsampling, then zero-pad or truncate ``in_channels`` to ``out_channels``.

    The channel counts are attributes, not read from the input's shape, so that ``torch.fx`` traces a
    sliced model's shortcut into plain tensor ops.
    """

    def __init__(self, stride: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.in_channels = in_channels
        self.out_channels = out_channels

    def widths(self) -> tuple[int, int]:
        """(input channels, output channels)."""
        return self.in_channels, self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        cin, cout = self.widths()
        if cout > cin:
            return F.pad(x, (0, 0, 0, 0, 0, cout - cin))
        if cout < cin:
            return x[:, :cout]
        return x


class SlimZeroPadShortcut(_Slim, ZeroPadShortcut):
    """The shortcut whose widths follow its slots: the previous and the next stage's residual widths."""

    def widths(self) -> tuple[int, int]:
        return self.active()

    def to_plain(self) -> ZeroPadShortcut:
        return ZeroPadShortcut(self.stride, *self.active())


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut."""

    def __init__(self, b: LayerBuilder, cin: Slot, inner: Slot, cout: Slot, stride: int) -> None:
        super().__init__()
        self.conv1 = b.conv(cin, inner, 3, stride)
        self.bn1 = b.bn(inner)
        self.conv2 = b.conv(inner, cout, 3)
        self.bn2 = b.bn(cout)
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = SlimZeroPadShortcut(stride, cin.full, cout.full)
            b.bind(self.shortcut, cin, cout)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifarPlain(nn.Module):
    """The forward pass of ResNet-CIFAR; slicing traces it, on plain layers, into a standalone graph."""

    conv1: nn.Module
    bn1: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    fc: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class ResNetCifar(SlimmableNet, ResNetCifarPlain):
    """Slimmable ResNet-(6n+2) for 32x32 inputs with stage widths 16k, 32k, 64k.

    ``width`` k is a whole number (k x ResNet) or a fraction that makes 16k whole (0.5: 8, 16, 32
    channels), the narrow ResNets where the PareCO paper expects per-layer widths to gain most.
    """

    plain_class = ResNetCifarPlain

    def __init__(
        self,
        depth: int = 20,
        width: float = 1,
        num_classes: int = 10,
        low: float = 0.316,
        divisor: int | None = None,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet-CIFAR depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        if not width > 0 or (16 * width) % 1:
            raise ValueError(
                f"width factor must be positive with 16 x width whole (0.5, 1, 2, ...), got {width}"
            )
        n = (depth - 2) // 6
        self.arch = f"resnet{depth}"
        self.arch_kwargs = {
            "width": width,
            "num_classes": num_classes,
            "low": low,
            "divisor": divisor,
            "input_size": input_size,
        }
        b = LayerBuilder()
        dims = []
        for s, c in enumerate((int(16 * width), int(32 * width), int(64 * width)), start=1):
            dims.append((b.dim(f"stage{s}.residual", c), b.dim(f"stage{s}.inner", c)))
        rgb, classes = b.fixed(3), b.fixed(num_classes)
        self.conv1 = b.conv(rgb, dims[0][0], 3)
        self.bn1 = b.bn(dims[0][0])
        prev = dims[0][0]
        for s, (res, inner) in enumerate(dims, start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (s > 1 and j == 0) else 1
                blocks.append(BasicBlock(b, prev, inner, res, stride))
                prev = res
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.fc = b.linear(prev, classes)
        self._init_weights()
        self._finish(b, low, divisor, (3, input_size, input_size))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
