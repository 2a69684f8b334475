"""make_slimmable on concatenations, and converted models whose own attributes are named like the API.

A concatenation along channels keeps each input's width dimension and every layer reading it takes
its channels block by block. For every network: at full width it is the original (keys, shapes,
outputs), a slice at random configs equals the slimmable model, and the analytic MACs / params equal
torch's FLOP counter / the slice's parameter count.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pareco_runtime import ConversionError, SlimmableNet, make_slimmable, slice_model
from pareco_runtime.convert import _INSTANCE_API

from .convert_checks import counted_macs, warmed

torchvision = pytest.importorskip("torchvision")

SIZE = (3, 32, 32)


def _converted(net: nn.Module, size=SIZE) -> SlimmableNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned outputs
        return make_slimmable(net, torch.randn(1, *size)).eval()


def _check_exact(original: nn.Module, slim: SlimmableNet, size=SIZE, configs: int = 3) -> None:
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert (slim(x) - original(x)).abs().max().item() <= 1e-6
    assert slim.macs(slim.space.uniform(1.0)) == counted_macs(original, size)
    for seed in range(configs):
        alpha = slim.space.sample(torch.Generator().manual_seed(seed))
        sub = slice_model(slim, alpha).eval()
        with slim.config(alpha), torch.no_grad():
            assert torch.equal(sub(x), slim(x))
        assert slim.macs(alpha) == counted_macs(sub, size)
        assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


class Dense(nn.Module):
    """DenseNet-style: each layer reads the concatenation of every feature map so far (BN, ReLU, conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norms = nn.ModuleList(nn.BatchNorm2d(8 + 4 * i) for i in range(3))
        self.convs = nn.ModuleList(nn.Conv2d(8 + 4 * i, 4, 3, padding=1) for i in range(3))
        self.final = nn.BatchNorm2d(20)
        self.dw = nn.Conv2d(20, 20, 3, padding=1, groups=20)
        self.fc = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for norm, conv in zip(self.norms, self.convs):
            features.append(conv(F.relu(norm(torch.cat(features, 1)))))
        y = self.dw(F.relu(self.final(torch.cat(features, 1))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Inception(nn.Module):
    """GoogLeNet-style: branches (one behind a max pool) concatenated, read by the next block's convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 6, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 5, 1))
        self.next = nn.Conv2d(17, 7, 1)
        self.fc = nn.Linear(17 + 7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)
        z = torch.cat([F.max_pool2d(y, 2), self.next(F.max_pool2d(y, 2))], dim=1)
        return self.fc(z.mean((2, 3)))


class Fire(nn.Module):
    """SqueezeNet's fire module: a squeeze conv, then 1x1 and 3x3 expansions concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1 = nn.Conv2d(squeeze, expand, 1)
        self.e3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)


class Squeeze(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.fire1 = Fire(16, 4, 8)
        self.fire2 = Fire(16, 6, 12)
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fire2(self.fire1(F.relu(self.stem(x))))).mean((2, 3))


class CatAdd(nn.Module):
    """Two concatenations added (block for block: a with c, b with d), and a cat added to a plain tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1)
        self.c, self.d = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1)
        self.e, self.f, self.g = nn.Conv2d(10, 5, 1), nn.Conv2d(10, 3, 1), nn.Conv2d(10, 8, 1)
        self.h = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1) + torch.cat([self.c(x), self.d(x)], 1)
        z = torch.cat([self.e(y), self.f(y)], 1) * self.g(y)  # 5 + 3 channels times one block of 8
        return self.fc(self.h(z).mean((2, 3)))


class CatSpatial(nn.Module):
    """Concatenations along height and batch: every input has the output's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=2))
        y = torch.cat([y, 2 * y], 0)
        return self.fc(y.mean((2, 3)))


HAND_WRITTEN = [Dense, Inception, Squeeze, CatAdd, CatSpatial]


@pytest.mark.parametrize("make", HAND_WRITTEN, ids=lambda m: m.__name__)
def test_concatenations_slice_exactly(make):
    original = warmed(make(), SIZE)
    _check_exact(original, _converted(original))


def test_densenet_style_keeps_every_layer_a_width():
    slim = _converted(warmed(Dense(), SIZE))
    assert slim.space.names == ("stem", "convs.0", "convs.1", "convs.2")
    assert slim.pinned == {"fc": "the network's output"}


def test_inception_and_fire_branches_are_widths():
    assert _converted(warmed(Inception(), SIZE)).space.names == ("stem", "b1", "b2.0", "b2.2", "b3.1", "next")
    slim = _converted(warmed(Squeeze(), SIZE))
    assert slim.space.names == (
        "stem",
        "fire1.squeeze",
        "fire1.e1",
        "fire1.e3",
        "fire2.squeeze",
        "fire2.e1",
        "fire2.e3",
    )


def test_elementwise_couples_blocks_alike_and_pins_blocks_that_differ():
    with pytest.warns(
        UserWarning, match=r"mul \(call_function mul\): an elementwise op of tensors whose channels"
    ):
        slim = make_slimmable(CatAdd(), torch.randn(1, *SIZE))
    # a+c and b+d are one width each; e, f and g meet the product of differently concatenated tensors.
    assert slim.space.names == ("a", "b", "h")
    assert slim.space.full == (6, 4, 8)
    assert {"e", "f", "g"} <= set(slim.pinned)


def test_cat_along_other_dimensions_couples_its_inputs():
    slim = _converted(warmed(CatSpatial(), SIZE))
    assert slim.space.names == ("a", "c")  # a and b are one width: stacked along height


def test_batch_norm_on_a_concatenation_updates_only_its_active_statistics():
    slim = _converted(warmed(Dense(), SIZE))
    alpha = slim.space.uniform(0.5)
    k_stem, k0 = slim.space.channels(alpha)[:2]
    bn = slim.get_submodule("norms.1")  # reads stem (8) then convs.0 (4)
    before = bn.running_mean.clone()
    with slim.config(alpha, train=True):
        bn.train()
        slim(torch.randn(4, *SIZE))
        after = bn.running_mean.clone()
    active = torch.zeros(12, dtype=torch.bool)
    active[:k_stem] = True
    active[8 : 8 + k0] = True
    assert not torch.equal(after[active], before[active])
    assert torch.equal(after[~active], before[~active])


def _torchvision(name: str, **kwargs) -> tuple[nn.Module, SlimmableNet]:
    torch.manual_seed(0)
    original = warmed(torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs), (3, 64, 64))
    return original, _converted(original, (3, 64, 64))


TORCHVISION = [
    ("squeezenet1_1", {}),
    pytest.param("densenet121", {}, marks=pytest.mark.slow),
    pytest.param("googlenet", {"aux_logits": False, "init_weights": True}, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "kwargs"), TORCHVISION)
def test_torchvision_concatenating_models_convert_fully(name, kwargs):
    original, slim = _torchvision(name, **kwargs)
    # Only the classifier's output stays at full width.
    assert set(slim.pinned.values()) == {"the network's output"}
    assert slim.macs(slim.space.uniform(0.5)) < 0.3 * slim.macs(slim.space.uniform(1.0))
    _check_exact(original, slim, (3, 64, 64), configs=2)


@pytest.mark.slow
def test_squeezenet_slice_exports_to_onnx_with_parity(tmp_path):
    from export.exporter import export_point
    from export.formats import require

    try:
        require("onnx")
    except ValueError as exc:
        pytest.skip(str(exc))
    _, slim = _torchvision("squeezenet1_1")
    sub = slice_model(slim, slim.space.sample(torch.Generator().manual_seed(0)))
    assert export_point(sub, (3, 64, 64), "onnx", tmp_path / "p.onnx").max_abs_diff <= 1e-4


class NamedLikeTheApi(nn.Module):
    """A model whose own attributes, read by its forward, are named like SlimmableNet's members."""

    def __init__(self) -> None:
        super().__init__()
        self.channels = [3, 8, 5]
        self.alpha = 0.5
        self.space = "rgb"
        self.macs = 2
        self.config = {"scale": 3.0}
        self.conv = nn.Conv2d(self.channels[0], self.channels[1], 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(self.channels[1], self.channels[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x))) * self.alpha * self.config["scale"] * self.macs
        if self.space == "rgb" and self.training:
            y = y + 1
        return self.fc(y.mean((2, 3)))


def test_own_attributes_never_hide_the_api():
    original = warmed(NamedLikeTheApi(), SIZE)
    slim = _converted(original)
    assert slim.channels() == [8] and slim.alpha == [1.0] and slim.space.names == ("conv",)
    assert slim.macs() == counted_macs(original, SIZE)
    with slim.config([0.5]):
        assert slim.channels() == [4]
    _check_exact(original, slim)
    # The forward still sees its own attributes, in both modes.
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(slim.train()(x), original.train()(x))
    assert original.alpha == 0.5 and original.channels == [3, 8, 5]


def test_instance_api_lists_what_conversion_sets():
    slim = _converted(warmed(Dense(), SIZE))
    state = set(vars(nn.Module()))
    assert set(vars(slim)) - state - set(vars(Dense())) <= _INSTANCE_API


def test_layer_named_like_the_api_is_refused():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.space = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.space(x).mean((2, 3)))

    with pytest.raises(
        ConversionError, match=r"^make_slimmable: Net.space is named like a member of SlimmableNet"
    ):
        make_slimmable(Net(), torch.randn(1, *SIZE))


@pytest.mark.slow
def test_timm_dla34_slices_exactly():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = warmed(timm.create_model("dla34", num_classes=10), (3, 64, 64))
    slim = _converted(original, (3, 64, 64))
    assert isinstance(original.channels, list) and callable(slim.channels)
    assert set(slim.pinned.values()) == {"the network's output"}
    _check_exact(original, slim, (3, 64, 64), configs=2)
