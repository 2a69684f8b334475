"""make_slimmable on grouped convolutions (ResNeXt, RegNet): slimmed in whole groups, exactly.

A grouped conv with as many input as output channels shares one width dimension between them, whose
channel counts are multiples of its channels per group. For every network: at full width it is the
original (keys, shapes, outputs), a slice equals the slimmable model, every grouped dimension holds
whole groups, and the analytic MACs / params equal torch's FLOP counter / the slice's parameters.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pareco_runtime import SlimmableNet, SlimmableRuntime, make_slimmable, slice_model
from pareco_runtime.convert import rebuild

from .convert_checks import counted_macs, warmed
from .user_models import GroupedNet, grouped_net

torchvision = pytest.importorskip("torchvision")

SIZE = (3, 16, 16)


_CACHE: dict[str, tuple[nn.Module, SlimmableNet]] = {}


def _pair(name: str, size=SIZE) -> tuple[nn.Module, SlimmableNet]:
    if name not in _CACHE:
        torch.manual_seed(0)
        net = GroupedNet() if name == "grouped_net" else torchvision.models.get_model(name, num_classes=10)
        original = warmed(net, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pinned outputs (and GroupedNet's widening conv)
            _CACHE[name] = original, make_slimmable(original, torch.randn(1, *size)).eval()
    return _CACHE[name]


def _check_config(slim: SlimmableNet, alpha: list[float], size=SIZE) -> None:
    """At ``alpha`` the slice equals the slimmable model, every dimension holds whole groups, and MACs and
    params are torch's count and the slice's."""
    steps = slim.space.steps or (1,) * slim.space.dims
    assert all(c % s == 0 for c, s in zip(slim.space.channels(alpha), steps))
    sub = slice_model(slim, alpha).eval()
    x = torch.randn(2, *size)
    with slim.config(alpha), torch.no_grad():
        assert torch.equal(sub(x), slim(x))
    assert slim.macs(alpha) == counted_macs(sub, size)
    assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


def _check_full_width(original: nn.Module, slim: SlimmableNet, size=SIZE) -> None:
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert (slim(x) - original(x)).abs().max().item() <= 1e-6
    assert slim.macs(slim.space.uniform(1.0)) == counted_macs(original, size)
    assert slim.params(slim.space.uniform(1.0)) == sum(p.numel() for p in original.parameters())


def test_grouped_convs_share_one_width_in_whole_groups():
    original, slim = _pair("grouped_net")
    space = slim.space
    # stem; reduce+grouped (groups of 4); expand+shortcut (the residual); a and b, the concatenation's
    # blocks cat_grouped reads (groups of 3); mix feeds the widening conv: it and widen keep their width.
    assert space.names == ("stem.0", "reduce.0", "expand.0", "a", "b")
    assert space.full == (16, 32, 16, 12, 6) and space.steps == (1, 4, 1, 3, 3)
    assert set(slim.pinned) == {"mix", "widen", "fc"}
    _check_full_width(original, slim)


def test_a_grouped_conv_whose_widths_differ_is_pinned_with_a_warning():
    with pytest.warns(
        UserWarning, match=r"a grouped conv \(groups=9\) with 18 input and 36 output channels keeps"
    ):
        make_slimmable(GroupedNet(), torch.randn(1, *SIZE))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_configs_slice_exactly(seed):
    _, slim = _pair("grouped_net")
    _check_config(slim, slim.space.sample(torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("width", [0.25, 0.4, 0.5, 0.8, 1.0])
def test_uniform_widths_slice_exactly(width):
    _, slim = _pair("grouped_net")
    _check_config(slim, slim.space.uniform(width))


def test_manifests_made_before_keep_their_space():
    # A manifest records slim_grouped only for a network with grouped convs; one without it was written
    # when grouped convs kept their channels, and rebuilds that space (an older front loads unchanged).
    _, slim = _pair("grouped_net")
    recorded = dict(slim.arch_kwargs["convert"])
    assert recorded.pop("slim_grouped") is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = make_slimmable(GroupedNet(), torch.randn(1, *SIZE), slim_grouped=False)
        older = rebuild("pkg:grouped_net", {"model": {}, "convert": recorded}, GroupedNet)
        again = rebuild("pkg:grouped_net", {"model": {}, "convert": slim.arch_kwargs["convert"]}, GroupedNet)
    assert (
        older.space == kept.space
        and older.space.steps is None
        and older.space.names == ("stem.0", "expand.0")
    )
    assert again.space == slim.space
    plain = make_slimmable(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)), torch.randn(1, *SIZE))
    assert "slim_grouped" not in plain.arch_kwargs["convert"]


@pytest.mark.slow
def test_a_grouped_front_saves_its_steps_and_serves(tmp_path):
    from training.config import TrainConfig
    from training.loop import train

    cfg = TrainConfig(arch="tests.user_models:grouped_net", data="synthetic:64:4", image_size=16, epochs=1,
                      batch_size=32, candidates=4, calib_batches=1, calib_batch_size=32)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = train(cfg, tmp_path, show_progress=False)
    manifest = json.loads(path.read_text())
    # Format 5: older pareco versions ask for an upgrade instead of misreading the channel counts.
    assert manifest["format_version"] == 5 and manifest["width_space"]["steps"] == [1, 4, 1, 3, 3]
    assert manifest["architecture"]["kwargs"]["convert"]["slim_grouped"] is True
    rt = SlimmableRuntime.load(path, model=grouped_net)
    x = torch.randn(2, *rt.input_size)
    for p in rt.points:
        assert all(c % s == 0 for c, s in zip(p.channels, manifest["width_space"]["steps"]))
        rt.switch(p)
        with torch.no_grad():
            assert torch.equal(rt(x), rt.standalone(p)(x))


@pytest.mark.slow
def test_sliced_grouped_point_exports_with_parity(tmp_path):
    from export.exporter import export_point
    from export.formats import require

    try:
        require("onnx")
    except ValueError as exc:
        pytest.skip(str(exc))
    _, slim = _pair("grouped_net")
    sub = slice_model(slim, slim.space.uniform(0.5))
    assert export_point(sub, SIZE, "onnx", tmp_path / "p.onnx").max_abs_diff <= 1e-4


TORCHVISION = ["resnext50_32x4d", "regnet_y_400mf", "regnet_x_400mf"]
IMAGE = (3, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_grouped_models_slim_exactly(name):
    original, slim = _pair(name, IMAGE)
    assert not [n for n, why in slim.pinned.items() if "grouped conv" in why]
    assert slim.space.steps is not None and max(slim.space.steps) > 1
    _check_full_width(original, slim, IMAGE)
    for alpha in (
        slim.space.uniform(0.5),
        slim.space.smallest(),
        slim.space.sample(torch.Generator().manual_seed(0)),
    ):
        _check_config(slim, alpha, IMAGE)
