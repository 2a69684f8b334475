"""A network of a user's own, for the tests of make_slimmable and of fronts built from user code.

Not a test module: ``tests.user_models:user_cnn`` is what a user passes as ``--arch pkg.module:factory``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class UserCNN(nn.Module):
    """The kind of network a user writes: stem, a residual block, depthwise + SE, a linear head."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.conv_a = nn.Conv2d(24, 40, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(40)
        self.conv_b = nn.Conv2d(40, 24, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(24)
        self.expand = nn.Conv2d(24, 64, 1, bias=False)
        self.dw = nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64, bias=False)
        self.bn_dw = nn.BatchNorm2d(64)
        self.se = SqueezeExcite(64, 16)
        self.project = nn.Conv2d(64, 32, 1)
        self.hidden = nn.Linear(32, 48)
        self.head = nn.Linear(48, classes)
        self.scale = 0.5  # a plain attribute the forward reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x))))))
        x = F.relu6(self.bn_dw(self.dw(self.expand(x))))
        x = self.project(self.se(x)) * self.scale
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(F.relu(self.hidden(x)))


def user_cnn(num_classes: int = 7) -> UserCNN:
    """The factory a user names: ``--arch tests.user_models:user_cnn``."""
    return UserCNN(num_classes)


def raising_factory(num_classes: int = 7) -> UserCNN:
    """A factory with a bug: ``--arch tests.user_models:raising_factory`` must fail in one line."""
    raise RuntimeError(f"the user's bug ({num_classes} classes)")


def not_a_module(num_classes: int = 7) -> dict[str, int]:
    """A factory that returns something else than the network."""
    return {"num_classes": num_classes}


class KeywordSpotter(nn.Module):
    """A keyword-spotting network of the usual shape: 1-D convs over MFCC frames ``[N, 40, 98]``
    (40 coefficients, 98 frames of a one-second clip), BatchNorm1d, ReLU, a depthwise block with a
    residual add, global average pooling over time, then two linears with a BatchNorm1d between."""

    def __init__(self, num_classes: int = 12, mfcc: int = 40) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(mfcc, 64, 5, padding=2, bias=False), nn.BatchNorm1d(64), nn.ReLU()
        )
        self.dw = nn.Sequential(
            nn.Conv1d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm1d(64), nn.ReLU()
        )
        self.pw = nn.Sequential(nn.Conv1d(64, 64, 1, bias=False), nn.BatchNorm1d(64))
        self.down = nn.Sequential(
            nn.Conv1d(64, 96, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(96), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc1 = nn.Linear(96, 48)
        self.bn_fc = nn.BatchNorm1d(48)
        self.fc2 = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.pw(self.dw(x)))
        x = self.pool(self.down(x)).flatten(1)
        return self.fc2(F.relu(self.bn_fc(self.fc1(x))))


def kws_net(num_classes: int = 12) -> KeywordSpotter:
    """The factory a user passes as ``--model tests.user_models:kws_net``."""
    return KeywordSpotter(num_classes)


class TwoInputNet(nn.Module):
    """A network of two inputs (an image and a 1-D side signal) returning a dict and a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.signal = nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.seg = nn.Conv2d(16, 5, 1)
        self.cls = nn.Linear(16, 3)

    def forward(self, image: torch.Tensor, signal: torch.Tensor) -> dict[str, object]:
        a = self.image(image)
        b = F.interpolate(self.signal(signal), scale_factor=2.0)
        # The add ties the two branches' channels into one width dimension.
        pooled = F.adaptive_avg_pool2d(a, 1).flatten(1) + F.adaptive_max_pool1d(b, 1).flatten(1)
        seg = self.seg(self.up(a))
        return {"seg": seg, "heads": (self.cls(pooled), seg.amax((2, 3)))}


def lraspp(num_classes: int = 5) -> nn.Module:
    """torchvision's LRASPP-MobileNetV3-Large segmentation network, random weights (``--model`` factory)."""
    import torchvision

    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


def ssdlite(num_classes: int = 4) -> nn.Module:
    """torchvision's SSDlite320-MobileNetV3-Large detector, random weights (``--model`` factory): its
    transform, anchors and NMS are what torch.fx cannot trace."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


class UserFCN(nn.Module):
    """A tiny fully convolutional segmenter that returns a dict, as torchvision's segmentation models do."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        return {"out": self.classifier(x + self.block(x))}


def user_fcn(num_classes: int = 3) -> UserFCN:
    """The factory a user names for segmentation: ``--arch tests.user_models:user_fcn``."""
    return UserFCN(num_classes)


class UserFCNWithAux(UserFCN):
    """:class:`UserFCN` with an auxiliary head, as torchvision's segmenters built with ``aux_loss``: ``{"out", "aux"}``."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__(classes)
        self.aux = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        return {"out": self.classifier(x + self.block(x)), "aux": self.aux(x)}


def user_fcn_aux(num_classes: int = 3) -> UserFCNWithAux:
    return UserFCNWithAux(num_classes)


class GroupedNet(nn.Module):
    """A ResNeXt block, a grouped conv reading a concatenation, and one of more output than input channels."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        # 8 groups of 4 channels.
        self.grouped = nn.Sequential(
            nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.expand = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.shortcut = nn.Sequential(nn.Conv2d(16, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.a = nn.Conv2d(16, 12, 1)
        self.b = nn.Conv2d(16, 6, 1)
        # Reads the blocks of a and b, 12 and 6 channels: groups of 3 (bias included).
        self.cat_grouped = nn.Conv2d(18, 18, 3, padding=1, groups=6)
        self.mix = nn.Conv2d(18, 18, 1)
        # 9 -> 18 channels in 9 groups: its output's width cannot follow its input's; kept at full width.
        self.widen = nn.Conv2d(18, 36, 1, groups=9)
        self.fc = nn.Linear(36, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(self.expand(self.grouped(self.reduce(y))) + self.shortcut(y))
        y = self.cat_grouped(torch.cat([self.a(y), self.b(y)], 1))
        return self.fc(self.widen(self.mix(torch.relu(y))).mean((2, 3)))


def grouped_net(num_classes: int = 5) -> GroupedNet:
    return GroupedNet(num_classes)


class TinyTokenNet(nn.Module):
    """A next-token network of token ids ``[N, T]``: embedding plus positions, a residual MLP, a vocabulary head."""

    def __init__(self, vocab: int = 32, dim: int = 16, hidden: int = 48, context: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(context, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos
        return self.head(x + self.fc2(F.gelu(self.fc1(self.norm(x)))))


def tiny_token_net(vocab: int = 32, context: int = 12) -> TinyTokenNet:
    return TinyTokenNet(vocab=vocab, context=context)


class SensorFusionNet(nn.Module):
    """An image and a vector of side features (a camera frame and its sensor readings), joined before the head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.side = nn.Linear(4, 12)
        self.head = nn.Linear(28, classes)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(image).mean((2, 3))
        return self.head(torch.cat([pooled, F.relu(self.side(features))], 1))


def sensor_fusion_net(classes: int = 3) -> SensorFusionNet:
    return SensorFusionNet(classes)


class PerImageNet(nn.Module):
    """Scores a list of images of any number and size, resized to one batch in a Python loop over the
    list (which torch.fx cannot trace), as detectors take their inputs; its ``body`` is traceable."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1)
        )

    def forward(self, images: list[torch.Tensor], scale: float = 1.0) -> list[torch.Tensor]:
        batch = torch.cat([F.interpolate(x[None], size=(12, 12)) for x in images])
        return list(self.body(batch).mean((2, 3)) * scale)


def per_image_net(classes: int = 3) -> PerImageNet:
    """``--model`` factory of :class:`PerImageNet`."""
    torch.manual_seed(0)
    return PerImageNet(classes)
