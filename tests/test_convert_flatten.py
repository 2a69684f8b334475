"""make_slimmable on a map flattened into a classifier (VGG, AlexNet).

A flatten of ``[N, C, H, W]`` into ``[N, C*H*W]`` keeps the channels' width: each channel is H*W
consecutive features, and the Linear reading them takes the first k*H*W (of each block, over a
concatenation). For every network: at full width it is the original, a slice at random configs equals
the slimmable model, and the analytic MACs / params equal torch's FLOP counter / the slice's count.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pareco_runtime import make_slimmable, slice_model
from pareco_runtime.ops import SlimLinear

from .convert_checks import warmed
from .test_convert_concat import _check_exact, _converted

SIZE = (3, 16, 16)


class VGGish(nn.Module):
    """Convs, an adaptive pool to 3x3 and a classifier reading the flattened map, flattened by ``how``."""

    def __init__(self, how: str = "torch.flatten", branches: bool = False) -> None:
        super().__init__()
        self.how = how
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.a = nn.Conv2d(8, 16, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1) if branches else None
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.flat = nn.Flatten()
        features = (20 if branches else 16) * 9
        self.classifier = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        y = self.a(x) if self.b is None else torch.cat([self.a(x), self.b(x)], 1)
        y = self.pool(torch.relu(y))
        if self.how == "torch.flatten":
            y = torch.flatten(y, 1)
        elif self.how == "view":
            y = y.view(y.size(0), -1)
        elif self.how == "reshape":
            y = y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3])
        elif self.how == "nn.Flatten":
            y = self.flat(y)
        elif self.how == "constant":
            y = y.view(-1, 144)
        return self.classifier(y)


@pytest.mark.parametrize("how", ["torch.flatten", "view", "reshape", "nn.Flatten"])
def test_flatten_into_a_linear_slims_the_last_conv(how):
    original = warmed(VGGish(how), SIZE)
    slim = _converted(original, SIZE)
    assert set(slim.pinned.values()) == {"the network's output"}
    fc = slim.get_submodule("classifier.0")
    assert isinstance(fc, SlimLinear) and fc.in_span == 9
    _check_exact(original, slim, SIZE, configs=4)


def test_linear_reads_the_first_features_of_each_block_of_a_flattened_concatenation():
    original = warmed(VGGish(branches=True), SIZE)
    slim = _converted(original, SIZE)
    assert set(slim.pinned.values()) == {"the network's output"}
    _check_exact(original, slim, SIZE, configs=4)
    # The a-block's first k channels are its first 9k features; the b-block starts at feature 16 * 9.
    channels = dict(zip(slim.space.names, slim.channels(slim.space.uniform(0.5))))
    ka, kb = channels["a"], channels["b"]
    alpha = slim.space.uniform(0.5)
    fc = slice_model(slim, alpha).get_submodule("classifier.0")
    full = original.classifier[0].weight[: fc.out_features]
    expected = torch.cat([full[:, : 9 * ka], full[:, 144 : 144 + 9 * kb]], 1)
    assert torch.equal(fc.weight, expected)


def test_flatten_to_a_constant_feature_count_keeps_its_channels():
    with pytest.warns(UserWarning, match="a flatten to a constant number of features"):
        slim = make_slimmable(VGGish("constant").eval(), torch.randn(1, *SIZE))
    assert "a flatten to a constant number of features" in slim.pinned["a"]


class FlatNorm(nn.Module):
    """A BatchNorm1d over a flattened map: its features are no channels of a width, so it keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 4, 3, padding=1)
        self.norm = nn.BatchNorm1d(4 * 16 * 16)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(torch.flatten(self.conv(self.stem(x)), 1)))


def test_other_ops_on_flattened_features_keep_the_channels():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = make_slimmable(FlatNorm().eval(), torch.randn(1, *SIZE))
    assert slim.pinned["conv"].startswith("norm (norm)") and slim.space.names == ("stem",)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("vgg11", 32), ("vgg11_bn", 32), ("alexnet", 64)])
def test_torchvision_classifiers_on_flattened_maps_convert_fully(name, size):
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.get_model(name, weights=None, num_classes=10)
    original = warmed(original, (3, size, size))
    slim = _converted(original, (3, size, size))
    assert set(slim.pinned.values()) == {"the network's output"}
    _check_exact(original, slim, (3, size, size), configs=2)


@pytest.mark.slow
def test_sliced_vggish_exports_to_onnx_with_parity(tmp_path):
    from export.exporter import export_point
    from export.formats import require

    try:
        require("onnx")
    except ValueError as exc:
        pytest.skip(str(exc))
    slim = _converted(warmed(VGGish(branches=True), SIZE), SIZE)
    sub = slice_model(slim, slim.space.sample(torch.Generator().manual_seed(0)))
    assert export_point(sub, SIZE, "onnx", tmp_path / "p.onnx").max_abs_diff <= 1e-4
