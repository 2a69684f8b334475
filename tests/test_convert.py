"""make_slimmable: torchvision models and a network of the user's own become slimmable, exactly.

Random initialisation only (no downloads). For every model: at full width the converted network
is the original (keys, shapes, outputs), a sliced random config equals the slimmable one, and the
analytic MACs / params equal torch's flop counter / the slice's parameter count.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import ConversionError, SlimmableNet, make_slimmable, slice_model

from .user_models import UserCNN

torchvision = pytest.importorskip("torchvision")

# Small inputs keep the passes cheap; every model here runs at 64x64.
SIZE = (3, 64, 64)
TORCHVISION = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "mnasnet1_0",
    "regnet_y_400mf",
]


def _flop_counter_macs(net: nn.Module, size) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, *size))
    return fc.get_total_flops() // 2


def _original(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "user_cnn":
        net = UserCNN()
    else:
        net = torchvision.models.get_model(name, weights=None, num_classes=10)
    # Non-trivial BN statistics, so that full-width equality tests the statistics too.
    net.train()
    with torch.no_grad():
        net(torch.randn(8, *SIZE))
    return net.eval()


_CACHE: dict[str, tuple[nn.Module, SlimmableNet]] = {}


def _pair(name: str) -> tuple[nn.Module, SlimmableNet]:
    if name not in _CACHE:
        original = _original(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pinned outputs
            _CACHE[name] = original, make_slimmable(original, torch.randn(1, *SIZE)).eval()
    return _CACHE[name]


MODELS = ["user_cnn", *TORCHVISION]
# The fast subset (-m "not slow") checks three models; CI checks them all.
FAST = {"user_cnn", "resnet18", "mobilenet_v3_small"}
CHECKED = [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in MODELS]


@pytest.mark.parametrize("name", CHECKED)
def test_full_width_is_the_original(name):
    original, slim = _pair(name)
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    slim.load_state_dict(original.state_dict())
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        assert (slim(x) - original(x)).abs().max().item() <= 1e-6
    assert slim.macs(slim.space.uniform(1.0)) == _flop_counter_macs(original, SIZE)
    assert slim.params(slim.space.uniform(1.0)) == sum(p.numel() for p in original.parameters())


@pytest.mark.parametrize("name", CHECKED)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_config_slices_exactly(name, seed):
    _, slim = _pair(name)
    alpha = slim.space.sample(torch.Generator().manual_seed(seed))
    sub = slice_model(slim, alpha).eval()
    assert {type(m).__module__.partition(".")[0] for m in sub.modules()} == {"torch"}
    x = torch.randn(2, *SIZE)
    slim.set_widths(alpha)
    try:
        with torch.no_grad():
            assert torch.equal(sub(x), slim(x))
    finally:
        slim.set_widths(slim.space.uniform(1.0))
    assert slim.macs(alpha) == _flop_counter_macs(sub, SIZE)
    assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


def test_user_cnn_groups_follow_the_graph():
    _, slim = _pair("user_cnn")
    # stem+residual (tied by the add), conv_a, expand+dw (depthwise), se.fc1, project, hidden; head pinned.
    assert slim.space.names == ("stem.0", "conv_a", "expand", "se.fc1", "project", "hidden")
    assert slim.space.full == (24, 40, 64, 16, 32, 48)


def test_original_is_left_untouched():
    original = _original("user_cnn")
    before = {k: v.clone() for k, v in original.state_dict().items()}
    slim = make_slimmable(original, torch.randn(1, *SIZE))
    assert not any(type(m).__module__.startswith("pareco_runtime") for m in original.modules())
    with torch.no_grad():
        slim.train()(torch.randn(4, *SIZE))
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


def test_tie_and_pin_reshape_the_space():
    original = torchvision.models.resnet18(num_classes=10)
    tie = {f"stage{i}.inner": [f"layer{i}.*.conv1"] for i in (1, 2, 3)}
    slim = make_slimmable(original, torch.randn(1, *SIZE), tie=tie, pin=["layer4.*"])
    # Residual widths of stem+layer1, layer2, layer3; one inner width per stage; layer4 stays full.
    assert slim.space.names == (
        "conv1",
        "stage1.inner",
        "stage2.inner",
        "layer2.0.conv2",
        "stage3.inner",
        "layer3.0.conv2",
    )
    assert slim.pinned["layer4.0.conv1"] == "pinned by 'layer4.*'"
    with pytest.raises(ConversionError, match=r"tie 'mixed' joins groups of different widths"):
        make_slimmable(original, torch.randn(1, *SIZE), tie={"mixed": ["layer1.0.conv1", "layer2.0.conv1"]})
    with pytest.raises(ConversionError, match=r"pin pattern 'nope\*' matches no Conv2d/BatchNorm2d/Linear"):
        make_slimmable(original, torch.randn(1, *SIZE), pin=["nope*"])


class Shuffle(nn.Module):
    """A concatenation, then a channel shuffle: a coupling make_slimmable does not slim."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(16, 12, 1)
        self.d = nn.Conv2d(12, 12, 1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = self.d(F.relu(self.c(y)))
        return self.fc(y.mean((2, 3)))


def test_unknown_coupling_is_pinned_with_a_warning_naming_the_node():
    net = Shuffle().eval()
    with pytest.warns(
        UserWarning, match=r"make_slimmable: \d+ op\(s\) keep .*: view \(call_method view\): a reshape"
    ):
        slim = make_slimmable(net, torch.randn(1, *SIZE))
    assert slim.space.names == ("c", "d")  # a and b, concatenated, meet the shuffle; c reads them
    assert set(slim.pinned) == {"a", "b", "fc"} and slim.pinned["fc"] == "the network's output"
    alpha = [0.5, 0.75]
    sub = slice_model(slim, alpha).eval()
    slim.set_widths(alpha)
    slim.eval()
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(sub(x), slim(x))
    assert slim.macs(alpha) == _flop_counter_macs(sub, SIZE)


def test_unknown_coupling_refused_on_request():
    with pytest.raises(
        ConversionError, match=r"^make_slimmable: view \(call_method view\): .*; pin the modules"
    ):
        make_slimmable(Shuffle(), torch.randn(1, *SIZE), on_unsupported="error")


class PReLUNet(nn.Module):
    """Two convs around a PReLU of ``slopes`` slopes (1: shared by every channel; 8: one per channel)."""

    def __init__(self, slopes: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(slopes, init=0.1)
        self.b = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.act(self.a(x))).mean((2, 3)))


@pytest.mark.parametrize("slopes", [1, 8])
def test_prelu_with_a_slope_per_channel_keeps_its_channels(slopes):
    net = PReLUNet(slopes).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slim = make_slimmable(net, torch.randn(1, *SIZE)).eval()
    said = " ".join(str(w.message) for w in caught)
    if slopes == 1:
        # One shared slope acts per element: the first conv's width passes through.
        assert slim.space.names == ("a", "b") and "PReLU" not in said
    else:
        # C slopes would not fit fewer channels: the PReLU's channels stay whole, saying why.
        assert "act (act): a PReLU with 8 per-channel slopes keeps its channels" in said
        assert slim.space.names == ("b",) and "PReLU with 8" in slim.pinned["a"]
    alpha = [0.5] * slim.space.dims
    sub = slice_model(slim, alpha).eval()
    slim.set_widths(alpha)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(sub(x), slim(x))
    assert slim.macs(alpha) == _flop_counter_macs(sub, SIZE)


def test_grouped_conv_is_pinned_on_request_with_a_warning():
    # What a front made before grouped convs were slimmed rebuilds (tests/test_convert_grouped.py).
    with pytest.warns(UserWarning, match=r"a grouped conv \(groups=32\) keeps its channels"):
        slim = make_slimmable(
            torchvision.models.resnext50_32x4d(num_classes=10), torch.randn(1, *SIZE), slim_grouped=False
        )
    # The stem and the four stages' residual widths; the grouped convs pin every inner width.
    assert slim.space.dims == 5


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_model_is_one_line():
    with pytest.raises(ConversionError) as info:
        make_slimmable(DataDependent(), torch.randn(1, *SIZE))
    text = str(info.value)
    assert text.startswith("make_slimmable: torch.fx cannot trace DataDependent") and "\n" not in text


def test_wrong_example_input_is_one_line():
    with pytest.raises(ConversionError, match=r"^make_slimmable: example_input must be a batch-first tensor"):
        make_slimmable(UserCNN(), torch.randn(64))
    # [3, 64, 64] is a batch of 1-D inputs to make_slimmable, which the 2-D network refuses.
    with pytest.raises(ConversionError, match=r"input \(1, 64, 64\) does not run through UserCNN"):
        make_slimmable(UserCNN(), torch.randn(3, 64, 64))
    with pytest.raises(ConversionError, match=r"does not run through UserCNN .*; give an input of the size"):
        make_slimmable(UserCNN(), torch.randn(1, 5, 64, 64))


def test_nothing_to_slim_is_refused():
    with pytest.raises(
        ConversionError, match=r"every channel group of Sequential is pinned, nothing to slim"
    ):
        make_slimmable(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.randn(1, *SIZE))


# The user's CNN in both formats, a residual network in ONNX and MobileNetV2 in ExecuTorch, where XNNPACK
# must take every operator. Every torchvision model in both formats is a sweep, not a test: 14 lowerings
# took 290 s of the suite on a busy 2-core machine; run
# ``python -m benchmarks.convert_coverage --size 64 --export onnx executorch`` after a converter change.
EXPORTS = [
    ("user_cnn", "onnx"),
    ("user_cnn", "executorch"),
    ("resnet18", "onnx"),
    ("mobilenet_v2", "executorch"),
]
# Models whose every operator XNNPACK takes: none falls back to ExecuTorch's portable kernels.
FULLY_DELEGATED = {"mobilenet_v2"}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fmt"), EXPORTS)
def test_sliced_point_exports_with_parity(name, fmt, tmp_path):
    from export.exporter import export_point
    from export.formats import require

    try:
        require(fmt)
    except ValueError as exc:
        pytest.skip(str(exc))
    _, slim = _pair(name)
    sub = slice_model(slim, slim.space.uniform(0.5))
    result = export_point(sub, SIZE, fmt, tmp_path / f"p.{fmt}")
    assert result.max_abs_diff <= 1e-4
    if fmt == "executorch" and name in FULLY_DELEGATED:
        assert result.details["undelegated_ops"] == []
