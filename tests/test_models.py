"""The model zoo: width spaces, exact costs, slicing parity, torchvision compatibility."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import build_model, slice_model
from pareco_runtime.ops import SLIM_TYPES
from pareco_runtime.space import WidthSpace

# Small inputs keep MobileNet forward passes cheap; costs are computed for the model's input size.
ZOO = {
    "resnet20": {},
    "resnet32": {"width": 2},
    "resnet44": {"width": 0.5},  # a narrow ResNet: 8-16-32 channels
    "mobilenet_v2": {"input_size": 64, "num_classes": 10},
    "mobilenet_v3_large": {"input_size": 64, "num_classes": 10},
}
DIMS = {"resnet20": 6, "resnet32": 6, "resnet44": 6, "mobilenet_v2": 25, "mobilenet_v3_large": 22}

_cache: dict[tuple[str, bool], nn.Module] = {}


def model(name: str, divisor: int | None = None):
    key = (name, divisor is not None)
    if key not in _cache:
        torch.manual_seed(0)
        m = build_model(name, divisor=divisor, **ZOO[name])
        # Non-trivial BN statistics so that parity checks exercise them.
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.1, 0.1)
        _cache[key] = m.eval()
    return _cache[key]


def alphas(name: str):
    m = model(name)
    return st.lists(st.floats(m.space.low, 1.0), min_size=m.space.dims, max_size=m.space.dims)


def flop_counter_macs(net: nn.Module, input_size) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, *input_size))
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("name", list(ZOO))
def test_width_space_dimensions(name):
    m = model(name)
    assert m.space.dims == DIMS[name]
    assert m.space.low == (0.316 if name.startswith("resnet") else 0.42)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("divisor", [None, 8])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_costs_equal_flop_counter_and_sliced_params(name, divisor, data):
    m = model(name, divisor)
    alpha = data.draw(alphas(name))
    sub = slice_model(m, alpha)
    assert m.macs(alpha) == flop_counter_macs(sub, m.input_size)
    assert m.params(alpha) == sum(p.numel() for p in sub.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_sliced_model_equals_slimmable(name, data):
    m = model(name)
    alpha = data.draw(alphas(name))
    sub = slice_model(m, alpha).eval()
    x = torch.randn(3, *m.input_size)
    m.set_widths(alpha)
    with torch.no_grad():
        diff = (m(x) - sub(x)).abs().max().item()
    m.set_widths(m.space.uniform(1.0))
    assert diff <= 1e-5
    assert not any(isinstance(mod, SLIM_TYPES) for mod in sub.modules())
    assert not sub._forward_hooks and not sub._forward_pre_hooks


def test_sliced_tensors_are_the_sliced_shapes():
    m = model("resnet20")
    alpha = [0.5, 0.316, 1.0, 0.75, 0.316, 0.5]
    sub = slice_model(m, alpha)
    ch = m.channels(alpha)
    assert sub.conv1.weight.shape == (ch[0], 3, 3, 3)
    assert sub.get_submodule("layer1.0.conv1").weight.shape == (ch[1], ch[0], 3, 3)
    assert sub.get_submodule("layer2.0.conv2").weight.shape == (ch[2], ch[3], 3, 3)
    assert sub.fc.weight.shape == (10, ch[4])
    assert sub.channels == ch and sub.alpha == alpha


def test_slicing_leaves_active_config_alone():
    m = model("resnet20")
    m.set_widths(m.space.uniform(0.5))
    slice_model(m, m.space.uniform(1.0))
    assert m.alpha == m.space.uniform(0.5)
    m.set_widths(m.space.uniform(1.0))


def test_resnet_shortcut_narrowing_keeps_first_channels():
    """When the next stage is narrower than the previous one, the shortcut drops the last channels."""
    m = model("resnet20")
    alpha = [1.0, 1.0, 0.316, 1.0, 1.0, 1.0]  # stage 2 residual (10 ch) narrower than stage 1 (16 ch)
    m.set_widths(alpha)
    sc = m.layer2[0].shortcut
    x = torch.randn(1, 16, 8, 8)
    y = sc(x)
    assert y.shape == (1, 10, 4, 4)
    assert torch.equal(y, x[:, :10, ::2, ::2])
    m.set_widths([1.0, 1.0, 1.0, 1.0, 0.316, 1.0])  # widening: zero padding
    y = sc(x)
    assert y.shape == (1, 32, 4, 4) and torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    m.set_widths(m.space.uniform(1.0))


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large"])
def test_full_width_equals_torchvision(arch):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    ref = getattr(torchvision.models, arch)(num_classes=10).eval()
    for mod in ref.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    m = build_model(arch, num_classes=10, input_size=64).eval()
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-6, rtol=0)
    assert m.params() == sum(p.numel() for p in ref.parameters())
    assert m.macs() == flop_counter_macs(ref, (3, 64, 64))


@pytest.mark.parametrize(
    "arch,macs",
    [("mobilenet_v2", 300_774_272), ("mobilenet_v3_large", 216_589_760), ("resnet20", 40_551_040)],
)
def test_reference_macs(arch, macs):
    assert build_model(arch).macs() == macs


def test_switch_allocates_nothing_and_shares_weights():
    m = model("mobilenet_v2")
    ptrs = [p.data_ptr() for p in m.parameters()]
    ch = m.ctx.ch
    m.set_widths(m.space.uniform(0.42))
    assert m.ctx.ch is ch
    assert [p.data_ptr() for p in m.parameters()] == ptrs
    assert m.macs() == m.macs(m.space.uniform(0.42))
    m.set_widths(m.space.uniform(1.0))


def test_divisor_gives_multiples():
    m = model("mobilenet_v2", 8)
    for c in m.channels(m.space.uniform(0.42)):
        assert c % 8 == 0


@given(
    full=st.lists(st.integers(1, 2048), min_size=1, max_size=30),
    low=st.floats(0.05, 1.0),
    divisor=st.sampled_from([None, 4, 8]),
    data=st.data(),
)
def test_width_space_properties(full, low, divisor, data):
    space = WidthSpace(tuple(f"g{i}" for i in range(len(full))), tuple(full), low, 1.0, divisor)
    a = data.draw(st.lists(st.floats(low, 1.0), min_size=len(full), max_size=len(full)))
    b = [
        max(x, y)
        for x, y in zip(a, data.draw(st.lists(st.floats(low, 1.0), min_size=len(full), max_size=len(full))))
    ]
    ca, cb = space.channels(a), space.channels(b)
    assert all(1 <= c <= f for c, f in zip(ca, full))
    assert all(x <= y for x, y in zip(ca, cb)), "channels grow with width"
    assert space.channels(space.uniform(1.0)) == list(full)
    space.validate(a)
    sample = space.sample(torch.Generator().manual_seed(0))
    space.validate(sample)


@given(
    groups=st.lists(
        st.tuples(st.integers(1, 64), st.sampled_from([1, 2, 3, 4, 8, 16])), min_size=1, max_size=20
    ),
    low=st.floats(0.05, 1.0),
    divisor=st.sampled_from([None, 4, 8]),
    data=st.data(),
)
def test_channel_steps_hold_in_every_config(groups, low, divisor, data):
    # A dimension of n groups of s channels (a grouped conv's) moves in whole groups at every config.
    full, steps = tuple(n * s for n, s in groups), tuple(s for _, s in groups)
    space = WidthSpace(tuple(f"g{i}" for i in range(len(full))), full, low, 1.0, divisor, None, steps)
    widths = st.lists(st.floats(low, 1.0), min_size=len(full), max_size=len(full))
    a = data.draw(widths)
    b = [max(x, y) for x, y in zip(a, data.draw(widths))]
    configs = [a, b, space.uniform(data.draw(st.floats(low, 1.0))), space.smallest()]
    for config in configs + space.sample(torch.Generator().manual_seed(0), 8):
        space.validate(config)
        assert all(c % s == 0 and s <= c <= f for c, s, f in zip(space.channels(config), steps, full))
    assert all(x <= y for x, y in zip(space.channels(a), space.channels(b))), "channels grow with width"
    assert space.channels(space.uniform(1.0)) == list(full)
    assert WidthSpace.from_dict(space.to_dict()) == space


def test_spaces_without_steps_keep_their_stored_form():
    stored = model("resnet20").space.to_dict()
    assert "steps" not in stored and WidthSpace.from_dict(stored).steps is None
    with pytest.raises(ValueError, match=r"channel step 3 of 'b' does not divide its 8 channels"):
        WidthSpace(("a", "b"), (8, 8), 0.25, 1.0, None, None, (2, 3))


@given(
    floors=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=12),
    data=st.data(),
)
def test_per_dimension_lows_bound_every_config(floors, data):
    low = min(floors)
    space = WidthSpace(
        tuple(f"g{i}" for i in range(len(floors))), (64,) * len(floors), low, 1.0, None, tuple(floors)
    )
    assert space.smallest() == floors
    w = data.draw(st.floats(low, 1.0))
    assert space.uniform(w) == [max(w, f) for f in floors]
    for config in (space.uniform(w), space.smallest(), *space.sample(torch.Generator().manual_seed(1), 8)):
        space.validate(config)
        assert all(a >= f for a, f in zip(config, floors))
    assert WidthSpace.from_dict(space.to_dict()) == space
    if max(floors) - low > 1e-5:  # validate() allows 1e-6 of slack for printed widths
        i = floors.index(max(floors))
        below = space.smallest()
        below[i] = low
        with pytest.raises(ValueError, match=f"outside the space \\[{floors[i]:g}, 1\\]"):
            space.validate(below)


def test_spaces_without_lows_keep_their_stored_form():
    assert "lows" not in model("resnet20").space.to_dict()
    with pytest.raises(ValueError, match=r"low 0\.1 of 'b' is outside"):
        WidthSpace(("a", "b"), (8, 8), 0.25, 1.0, None, (0.5, 0.1))


@pytest.mark.parametrize(
    "bad,msg",
    [
        ([0.5] * 5, "has 5 width multipliers but this space has 6"),
        ([0.5] * 5 + [1.2], "outside the space"),
        ([0.5] * 5 + [0.1], "outside the space"),
        ([0.5] * 5 + [float("nan")], "outside the space"),
    ],
)
def test_bad_configs_rejected(bad, msg):
    m = model("resnet20")
    with pytest.raises(ValueError, match=msg):
        m.set_widths(bad)
    with pytest.raises(ValueError, match=msg):
        m.macs(bad)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet21'; choose one of"):
        build_model("resnet21")
    with pytest.raises(ValueError, match="bad arguments"):
        build_model("mobilenet_v2", width=3)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large"])
@pytest.mark.parametrize("classes", [3, 10])
def test_initial_loss_is_near_chance(arch, classes):
    torch.manual_seed(0)
    m = build_model(arch, num_classes=classes, input_size=32).train()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(
            m(torch.randn(64, 3, 32, 32)), torch.randint(0, classes, (64,))
        )
    assert abs(loss.item() - math.log(classes)) < 0.25 * math.log(classes), loss.item()


@pytest.mark.parametrize("width", [0.3, 0.0, -1.0])
def test_resnet_width_factor_must_make_whole_channels(width):
    with pytest.raises(ValueError, match="16 x width whole"):
        build_model("resnet20", width=width)


def test_half_width_resnet_has_half_the_channels():
    assert model("resnet44").space.channels(model("resnet44").space.uniform(1.0))[:2] == [8, 8]
