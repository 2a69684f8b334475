"""make_slimmable on channels-last blocks: permutes, LayerNorm over channels, Linear on the last axis,
per-channel layer scales (ConvNeXt).

For every network: at full width it is the original (keys, shapes, outputs), a slice at uniform widths
1, 0.75, 0.5 and 0.25 equals the slimmable model exactly, the analytic MACs / params equal torch's FLOP
counter / the slice's parameter count, and (nearly) every conv and linear weight lies in a slimmable layer.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pareco_runtime import SlimmableNet, make_slimmable, slice_model
from pareco_runtime.ops import SlimChannelParameters, SlimContext, SlimConv2d, SlimLayerNorm, SlimLinear
from pareco_runtime.slicing import plain_twin

torchvision = pytest.importorskip("torchvision")
from torchvision.models.convnext import LayerNorm2d  # noqa: E402

from .convert_checks import counted_macs  # noqa: E402

SIZE = (3, 32, 32)
WIDTHS = (1.0, 0.75, 0.5, 0.25)


class ChannelsLastBlock(nn.Module):
    """ConvNeXt's block as torchvision writes it, with its layer scale ``[C]`` on the channels-last map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class TransposedBlock(nn.Module):
    """The block by a transpose, its scale ``[C]`` reshaped to ``[1, C, 1, 1]`` on the NCHW map (timm's way)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).transpose(1, 3)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))).transpose(1, 3)
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1))


class TinyConvNeXt(nn.Module):
    """A stem, two stages joined by a LayerNorm2d + strided conv, and a LayerNorm + Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 2, stride=2), LayerNorm2d(16, eps=1e-6))
        self.stage1 = ChannelsLastBlock(16)
        self.down = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, stride=2))
        self.stage2 = TransposedBlock(32)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.norm(x.mean((2, 3))))


def _scaled(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with layer scales and LayerNorm affines far from their initial values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.rpartition(".")[2] in ("gamma", "layer_scale") or (p.dim() == 1 and "norm" in name):
                p.uniform_(0.5, 1.5)
    return net.eval()


def _converted(net: nn.Module, size) -> SlimmableNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned output
        return make_slimmable(net, torch.randn(1, *size)).eval()


def _dense_weight_share(slim: SlimmableNet) -> float:
    """The share of conv and linear weights in slimmable layers whose output channels are a width dimension."""
    dense = [(n, m) for n, m in slim.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    slimmed = sum(
        m.weight.numel() for n, m in dense if isinstance(m, (SlimConv2d, SlimLinear)) and n not in slim.pinned
    )
    return slimmed / sum(m.weight.numel() for _, m in dense)


def _check_exact(original: nn.Module, slim: SlimmableNet, size) -> None:
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert torch.equal(slim(x), original(x))
    for w in WIDTHS:
        alpha = slim.space.uniform(w)
        sub = slice_model(slim, alpha).eval()
        with slim.config(alpha), torch.no_grad():
            assert torch.equal(sub(x), slim(x)), w
        assert slim.macs(alpha) == counted_macs(sub, size)
        assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


def test_channels_last_blocks_convert_exactly():
    original = _scaled(TinyConvNeXt())
    slim = _converted(original, SIZE)
    # stem + stage1 (the residual ties them), stage1's MLP, the down conv + stage2, stage2's MLP.
    assert slim.space.names == ("stem.0", "stage1.fc1", "down.1", "stage2.fc1")
    assert set(slim.pinned) == {"fc"}
    assert isinstance(slim.stage1.norm, SlimLayerNorm) and isinstance(slim.stem[1], SlimLayerNorm)
    assert isinstance(slim.stage1, SlimChannelParameters) and isinstance(slim.stage2, SlimChannelParameters)
    _check_exact(original, slim, SIZE)
    # The layer scales read the active channels; at full width the parameter itself.
    assert slim.stage1.gamma is slim.stage1._parameters["gamma"]
    with slim.config(slim.space.uniform(0.5)):
        assert slim.stage1.gamma.shape == (8,)


def test_layer_scale_module_of_a_plain_twin_is_its_own_class():
    slim = _converted(_scaled(TinyConvNeXt()), SIZE)
    twin = plain_twin(slim, slim.space.uniform(0.5))
    assert type(twin.stage1) is ChannelsLastBlock and not hasattr(twin.stage1, "ctx")
    assert type(twin.stage1.gamma) is nn.Parameter and twin.stage1.gamma.shape == (8,)
    assert type(twin.stem[1]) is LayerNorm2d and twin.stem[1].normalized_shape == (8,)


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_slim_layer_norm_is_the_plain_layer_norm_of_its_slices(channels_first, affine):
    torch.manual_seed(0)
    plain_type = LayerNorm2d if channels_first else nn.LayerNorm
    norm = SlimLayerNorm(12, elementwise_affine=affine, channels_first=channels_first, plain_type=plain_type)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2)
            norm.bias.normal_()
    ctx = SlimContext([12, 1])
    norm.bind(ctx, 0, 0)
    ctx.ch[0] = 7
    x = torch.randn(2, 7, 5, 5) if channels_first else torch.randn(2, 5, 5, 7)
    plain = norm.to_plain()
    assert type(plain) is plain_type and plain.normalized_shape == (7,)
    reference = plain_type(7, elementwise_affine=affine)
    if affine:
        reference.load_state_dict({k: v[:7] for k, v in norm.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(norm(x), plain(x))
        assert torch.equal(plain(x), reference(x))


def test_channels_last_ops_that_would_not_fit_a_narrower_width_pin():
    class ConvOnChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 8)
            self.conv2 = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(self.conv(x).permute(0, 2, 3, 1))
            y = self.conv2(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # a conv reads channels-last
            return self.head(y.reshape(1, 8, 8, 8).mean((1, 2)))  # a constant channel count

    with pytest.warns(UserWarning, match="keep the channels"):
        slim = make_slimmable(ConvOnChannelsLast(), torch.randn(1, 3, 8, 8))
    assert "a reshape to a constant number of channels" in slim.pinned["conv2"]


def test_layer_scale_of_a_module_with_an_api_named_member_pins():
    class Keyed(ChannelsLastBlock):
        def __init__(self, dim: int) -> None:
            super().__init__(dim)
            self.key = nn.Identity()  # a slimmable module's method name: its class is not swapped

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Keyed(8), nn.Conv2d(8, 4, 1))
    slim = make_slimmable(net, torch.randn(1, *SIZE))
    assert not isinstance(slim[1], SlimChannelParameters)
    assert "tensor 1.gamma" in slim.pinned["0"]
    assert slim.space.names == ("1.fc1",)


@pytest.mark.slow
def test_torchvision_convnext_tiny_converts_whole():
    size = (3, 64, 64)
    original = _scaled(torchvision.models.convnext_tiny(num_classes=10))
    slim = _converted(original, size)
    assert set(slim.pinned) == {"classifier.2"}
    assert _dense_weight_share(slim) > 0.999
    _check_exact(original, slim, size)


@pytest.mark.slow
def test_timm_convnext_atto_converts_whole():
    timm = pytest.importorskip("timm")
    size = (3, 64, 64)
    original = _scaled(timm.create_model("convnext_atto", num_classes=10))
    slim = _converted(original, size)
    assert set(slim.pinned) == {"head.fc"}
    assert _dense_weight_share(slim) > 0.999
    _check_exact(original, slim, size)


@pytest.mark.slow
def test_sliced_convnext_point_exports_to_onnx_with_parity(tmp_path):
    from export.exporter import export_point
    from export.formats import require

    try:
        require("onnx")
    except ValueError as exc:
        pytest.skip(str(exc))
    slim = _converted(_scaled(TinyConvNeXt()), SIZE)
    sub = slice_model(slim, slim.space.uniform(0.5))
    result = export_point(sub, SIZE, "onnx", tmp_path / "p.onnx")
    assert result.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_maxvit_runs_at_every_width_its_attention_reshape_sized_by_its_input():
    # MaxViT's attention reshapes its output to its input's channel count (``reshape(B, G, P, D)`` with
    # ``D`` from ``x.shape``) while chunking q, k, v pins the output's own channels: the input's must
    # stay whole too, or the converted model failed at width 0.5 ("shape ... is invalid for input").
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.maxvit_t(num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = make_slimmable(original, x, on_unsupported="pin")
    assert any("another tensor's channel count" in why for why in slim.pinned.values())
    for w in (0.5, 0.25):
        alpha = slim.space.uniform(w)
        with slim.config(alpha), torch.no_grad():
            got = slim(x)
        with torch.no_grad():
            assert torch.equal(got, slice_model(slim, alpha).eval()(x))
