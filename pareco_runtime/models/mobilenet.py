"""Slimmable MobileNetV2 and MobileNetV3-Large with torchvision's exact module trees.

At width 1.0 both are torchvision's architectures (same layers, names, parameter counts and
MACs), so ``model.load_state_dict(torchvision_model.state_dict())`` works as-is.

Width spaces (PareCO, Appendix A):
- MobileNetV2, 25 dims in [0.42, 1]: the stem, one width per stage output (layers joined by a
  residual add share it), one expansion width per block with an expansion conv (its depthwise conv
  shares it; block 1's depthwise conv shares the stem's), and the last 1x1 conv (1280).
- MobileNetV3-Large, 22 dims in [0.42, 1]: one width per residual group (the stem joins the first
  block's output), one expansion width per block that has one, the last conv (960) and the
  classifier's hidden layer (1280). The SE squeeze width is fixed; the SE output follows its conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..space import make_divisible
from .base import LayerBuilder, SlimmableNet, Slot

_V2_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

# (kernel, expanded, out, use_se, activation, stride), torchvision's mobilenet_v3_large table.
_V3_LARGE_SETTING = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]


# torchvision's MobileNetV3 BatchNorm settings (its V2 keeps PyTorch's defaults).
_V3_BN_EPS, _V3_BN_MOMENTUM = 0.001, 0.01


def conv_norm_act(
    b: LayerBuilder,
    cin: Slot,
    cout: Slot,
    kernel: int,
    stride: int = 1,
    depthwise: bool = False,
    act: type[nn.Module] | None = nn.ReLU6,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: keys 0 (conv), 1 (BN), 2 (activation, if any)."""
    layers: list[nn.Module] = [b.conv(cin, cout, kernel, stride, depthwise), b.bn(cout, eps, momentum)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidualV2(nn.Module):
    """MobileNetV2 block; ``conv`` mirrors torchvision's Sequential."""

    def __init__(
        self, b: LayerBuilder, cin: Slot, hidden: Slot, cout: Slot, stride: int, expand: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand:
            layers.append(conv_norm_act(b, cin, hidden, 1))
        layers += [
            conv_norm_act(b, hidden, hidden, 3, stride, depthwise=True),
            b.conv(hidden, cout, 1),
            b.bn(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Plain(nn.Module):
    """The forward pass of MobileNetV2; slicing traces it, on plain layers, into a standalone graph."""

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


class MobileNetV2(SlimmableNet, MobileNetV2Plain):
    """Slimmable MobileNetV2 (torchvision's at width 1.0), 25 width dimensions."""

    arch = "mobilenet_v2"
    plain_class = MobileNetV2Plain

    def __init__(
        self,
        num_classes: int = 1000,
        low: float = 0.42,
        divisor: int | None = None,
        input_size: int = 224,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.arch_kwargs = {
            "num_classes": num_classes,
            "low": low,
            "divisor": divisor,
            "input_size": input_size,
            "dropout": dropout,
        }
        b = LayerBuilder()
        rgb = b.fixed(3)
        prev = b.dim("stem", 32)
        features: list[nn.Module] = [conv_norm_act(b, rgb, prev, 3, 2)]
        block = 1
        for stage, (t, c, n, s) in enumerate(_V2_SETTING, start=1):
            out = prev if (prev.full == c) else b.dim(f"stage{stage}.out", c)
            for i in range(n):
                hidden = b.dim(f"block{block}.expand", prev.full * t) if t != 1 else prev
                features.append(InvertedResidualV2(b, prev, hidden, out, s if i == 0 else 1, t != 1))
                prev = out
                block += 1
        last = b.dim("last_conv", 1280)
        features.append(conv_norm_act(b, prev, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), b.linear(last, b.fixed(num_classes)))
        _torchvision_init(self)
        self._finish(b, low, divisor, (3, input_size, input_size))

    def torchvision_config(self, width_mult: float) -> list[float]:
        """The config that is ``torchvision.models.mobilenet_v2(width_mult=width_mult)``.

        torchvision rounds the stem and each stage's output to multiples of 8, derives each expansion
        from the rounded input (``round(inp * t)``) and keeps the last conv at 1280 below width 1, so
        its networks are non-uniform configs here (width 0.5: expansions at 0.67 of full in stage 2).
        ``ValueError`` where a group falls outside the space (below ``low``) or ``width_mult`` > 1.
        """
        if not 0 < width_mult <= 1:
            raise ValueError(
                f"--width-mult {width_mult:g}: must be in (0, 1] (the space's full width is 1.0)"
            )
        target = {"stem": make_divisible(32 * width_mult, 8), "last_conv": make_divisible(1280, 8)}
        inp, block = target["stem"], 1
        for stage, (t, c, n, _) in enumerate(_V2_SETTING, start=1):
            out = make_divisible(c * width_mult, 8)
            target[f"stage{stage}.out"] = out
            for _ in range(n):
                if t != 1:
                    target[f"block{block}.expand"] = round(inp * t)
                inp, block = out, block + 1
        space = self.space
        alpha = [target[name] / full for name, full in zip(space.names, space.full, strict=True)]
        for name, a, floor in zip(space.names, alpha, space.floor, strict=True):
            if a < floor:
                raise ValueError(
                    f"--width-mult {width_mult:g}: torchvision's '{name}' has {a:.3f} of its full width, "
                    f"below this space's lowest ({floor:g}); use a larger width_mult"
                )
        return alpha


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation with a slimmable input/output and a fixed squeeze width."""

    def __init__(self, b: LayerBuilder, c: Slot, squeeze: Slot) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = b.conv(c, squeeze, 1, bias=True)
        self.fc2 = b.conv(squeeze, c, 1, bias=True)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block; ``block`` mirrors torchvision's Sequential."""

    def __init__(
        self,
        b: LayerBuilder,
        cin: Slot,
        hidden: Slot,
        cout: Slot,
        kernel: int,
        use_se: bool,
        act: type[nn.Module],
        stride: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_norm_act(b, cin, hidden, 1, act=act, eps=_V3_BN_EPS, momentum=_V3_BN_MOMENTUM))
        layers.append(
            conv_norm_act(
                b,
                hidden,
                hidden,
                kernel,
                stride,
                depthwise=True,
                act=act,
                eps=_V3_BN_EPS,
                momentum=_V3_BN_MOMENTUM,
            )
        )
        if use_se:
            layers.append(SqueezeExcitation(b, hidden, b.fixed(make_divisible(hidden.full // 4, 8))))
        layers.append(conv_norm_act(b, hidden, cout, 1, act=None, eps=_V3_BN_EPS, momentum=_V3_BN_MOMENTUM))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result


class MobileNetV3Plain(nn.Module):
    """The forward pass of MobileNetV3; slicing traces it, on plain layers, into a standalone graph."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class MobileNetV3Large(SlimmableNet, MobileNetV3Plain):
    """Slimmable MobileNetV3-Large (torchvision's at width 1.0), 22 width dimensions."""

    arch = "mobilenet_v3_large"
    plain_class = MobileNetV3Plain

    def __init__(
        self,
        num_classes: int = 1000,
        low: float = 0.42,
        divisor: int | None = None,
        input_size: int = 224,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.arch_kwargs = {
            "num_classes": num_classes,
            "low": low,
            "divisor": divisor,
            "input_size": input_size,
            "dropout": dropout,
        }
        b = LayerBuilder()
        rgb = b.fixed(3)
        prev = b.dim("group16", 16)
        features: list[nn.Module] = [
            conv_norm_act(b, rgb, prev, 3, 2, act=nn.Hardswish, eps=_V3_BN_EPS, momentum=_V3_BN_MOMENTUM)
        ]
        for i, (k, exp, c, se, act, s) in enumerate(_V3_LARGE_SETTING, start=1):
            out = prev if (s == 1 and prev.full == c) else b.dim(f"group{c}", c)
            hidden = prev if exp == prev.full else b.dim(f"block{i}.expand", exp)
            features.append(
                InvertedResidualV3(b, prev, hidden, out, k, se, nn.Hardswish if act == "HS" else nn.ReLU, s)
            )
            prev = out
        last = b.dim("last_conv", 6 * prev.full)
        features.append(
            conv_norm_act(b, prev, last, 1, act=nn.Hardswish, eps=_V3_BN_EPS, momentum=_V3_BN_MOMENTUM)
        )
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head = b.dim("classifier.hidden", 1280)
        self.classifier = nn.Sequential(
            b.linear(last, head),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            b.linear(head, b.fixed(num_classes)),
        )
        _torchvision_init(self)
        self._finish(b, low, divisor, (3, input_size, input_size))


def _torchvision_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
