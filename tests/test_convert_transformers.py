"""make_slimmable on transformers: FFN hidden units and whole attention heads become width dimensions.

For every network: the heads and FFN widths are named dimensions (the heads moving in whole heads), at
full width it is the original (keys, shapes, outputs), random configs slice exactly, the analytic MACs
equal torch's FLOP counter on the slice (the attention matmuls included) and params the slice's.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from examples.byte_lm import ByteLM, CausalSelfAttention
from pareco_runtime import SlimmableNet, make_slimmable, slice_model
from pareco_runtime.models.base import flop_counter
from pareco_runtime.ops import SlimHeadCount, SlimMultiheadAttention

torchvision = pytest.importorskip("torchvision")


def _converted(net: nn.Module, x: torch.Tensor) -> SlimmableNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned residual stream
        return make_slimmable(net.eval(), x).eval()


def _counted(net: nn.Module, x: torch.Tensor) -> int:
    with flop_counter() as counter, torch.no_grad():
        net(x[:1])
    return counter.get_total_flops() // 2


def _check(original: nn.Module, slim: SlimmableNet, x: torch.Tensor, configs: int = 3) -> None:
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    with torch.no_grad():
        assert torch.equal(slim(x), original(x))
    generator = torch.Generator().manual_seed(0)
    for alpha in [slim.space.uniform(1.0), slim.space.smallest(), *slim.space.sample(generator, configs)]:
        sub = slice_model(slim, alpha).eval()
        with slim.config(alpha), torch.no_grad():
            assert torch.equal(sub(x), slim(x)), alpha
        assert slim.macs(alpha) == _counted(sub, x)
        assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


def _small_torchvision_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128
    )


def test_decoder_language_model_slims_heads_and_ffn():
    torch.manual_seed(0)
    original = ByteLM(dim=32, heads=4, layers=2, context=12)  # the example's model, small
    ids = torch.randint(0, 50, (2, 12))
    slim = _converted(original, ids)
    assert slim.space.names == (
        "blocks.0.attn.heads",
        "blocks.0.ffn.gate",
        "blocks.1.attn.heads",
        "blocks.1.ffn.gate",
    )
    assert slim.space.steps == (8, 1, 8, 1)  # whole heads of 8 channels
    _check(original, slim, ids)
    # At half width: 2 of the 4 heads, each of its 8 channels.
    assert slim.channels(slim.space.uniform(0.5))[0] == 16


def test_torchvision_vision_transformer_slims_heads_and_mlp():
    original = _small_torchvision_vit()
    x = torch.randn(2, 3, 32, 32)
    slim = _converted(original, x)
    layers = [f"encoder.layers.encoder_layer_{i}" for i in range(2)]
    assert slim.space.names == tuple(
        n for la in layers for n in (f"{la}.self_attention.heads", f"{la}.mlp.0")
    )
    assert isinstance(slim.encoder.layers.encoder_layer_0.self_attention, SlimMultiheadAttention)
    _check(original, slim, x)


# vit_tiny's check took 1.9 s: slow; deit_tiny keeps the rule in the fast subset.
@pytest.mark.parametrize(
    "name", [pytest.param("vit_tiny_patch16_224", marks=pytest.mark.slow), "deit_tiny_patch16_224"]
)
def test_timm_vits_slim_heads_and_mlp(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model(name, img_size=32, depth=3)
    x = torch.randn(2, 3, 32, 32)
    slim = _converted(original, x)
    assert slim.space.names == tuple(
        n for i in range(3) for n in (f"blocks.{i}.attn.heads", f"blocks.{i}.mlp.fc1")
    )
    assert slim.space.steps == (64, 1) * 3  # 3 heads of 64 channels each
    assert isinstance(slim.blocks[0].attn, SlimHeadCount)
    _check(original, slim, x)
    with slim.config(slim.space.smallest()):
        assert (slim.blocks[0].attn.num_heads, slim.blocks[0].attn.attn_dim) == (1, 64)
    # The slice holds timm's own Attention at the active heads.
    twin = slice_model(slim, slim.space.smallest())
    assert twin.get_submodule("blocks.0.attn.qkv").weight.shape == (3 * 64, 192)


@pytest.mark.slow
def test_hybrid_fastvit_slims_the_ffn_of_every_block_attention_stage_included():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model("fastvit_sa12", num_classes=10)  # RepMixer stages, then attention
    x = torch.randn(2, 3, 64, 64)
    slim = _converted(original, x)
    # Each block's ConvMLP hidden width, the attention stage's (stages.3) too; its heads stay whole:
    # timm's FastViT Attention is not among the attention modules whose heads the converter knows.
    assert sum(n.endswith(".mlp.fc1") for n in slim.space.names) == 12
    assert {"stages.3.blocks.0.mlp.fc1", "stages.3.blocks.1.mlp.fc1"} <= set(slim.space.names)
    _check(original, slim, x, configs=2)


def _with_mlp(attention: nn.Module) -> nn.Module:
    return nn.Sequential(attention, nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))


def test_heads_split_by_a_constant_count_are_pinned_saying_why():
    class ConstantHeads(CausalSelfAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, 4, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
            return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1))

    with pytest.warns(UserWarning, match="a head count that no config changes; write -1 for it"):
        slim = make_slimmable(_with_mlp(ConstantHeads(32, 4)), torch.randn(1, 6, 32))
    assert slim.space.names == ("0.o", "1")  # the projections' outputs, no heads
    assert "0.q" in slim.pinned


def test_multihead_attention_on_the_network_input_slims_its_heads():
    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    original, x = _with_mlp(SelfAttention()), torch.randn(2, 6, 32)
    slim = _converted(original, x)
    assert slim.space.names == ("0.attn.heads", "1")
    _check(original, slim, x)


def test_multihead_attention_with_attention_weights_is_pinned():
    class WithWeights(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, w = self.attn(x, x, x)
            return y * w.mean()

    with pytest.warns(UserWarning, match="other than self-attention with need_weights=False"):
        slim = make_slimmable(_with_mlp(WithWeights()), torch.randn(1, 6, 32))
    assert slim.space.names == ("1",)
    assert not isinstance(slim[0].attn, SlimMultiheadAttention)


@pytest.mark.slow
def test_torchvision_vit_b_16_slims_heads_and_mlp():
    original = torchvision.models.vit_b_16(weights=None, image_size=64)
    x = torch.randn(1, 3, 64, 64)
    slim = _converted(original, x)
    assert slim.space.dims == 24
    assert slim.space.names[:2] == (
        "encoder.layers.encoder_layer_0.self_attention.heads",
        "encoder.layers.encoder_layer_0.mlp.0",
    )
    _check(original, slim, x, configs=1)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_sliced_vit_point_exports_with_parity(tmp_path, fmt):
    from export.exporter import export_point
    from export.formats import get_format, require

    try:
        require(fmt)
    except ValueError as exc:
        pytest.skip(str(exc))
    slim = _converted(_small_torchvision_vit(), torch.randn(1, 3, 32, 32))
    sub = slice_model(slim, slim.space.uniform(0.5))
    result = export_point(sub, (3, 32, 32), fmt, tmp_path / f"p{get_format(fmt).ext}")
    assert result.max_abs_diff <= 1e-4
