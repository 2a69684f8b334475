"""torchvision's width_mult MobileNetV2 networks are exact configs of pareco's space, offered by name."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import build_model
from pareco_runtime.slicing import slice_model
from training.config import TrainConfig, TrainingError
from training.strategies import Independent, Slim, widths_spread_over_macs

WIDTH_MULTS = (0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def v2():
    return build_model("mobilenet_v2", num_classes=10, input_size=64).eval()


@pytest.mark.parametrize("width_mult", WIDTH_MULTS)
def test_the_config_is_torchvisions_network(v2, width_mult: float) -> None:
    alpha = v2.torchvision_config(width_mult)
    tv = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=10).eval()
    sliced = slice_model(v2, alpha)
    tv.load_state_dict(sliced.state_dict())  # strict: every tensor of torchvision's network, its shape
    assert v2.params(alpha) == sum(p.numel() for p in tv.parameters())
    x = torch.randn(2, 3, 64, 64)
    with FlopCounterMode(display=False) as counter:
        expected = tv(x[:1])
    assert v2.macs(alpha) == counter.get_total_flops() // 2
    with torch.no_grad():
        assert torch.equal(sliced(x), tv(x)) and expected.shape == (1, 10)


def test_widths_are_not_uniform_and_the_last_conv_stays_full(v2) -> None:
    alpha = dict(zip(v2.space.names, v2.torchvision_config(0.5), strict=True))
    assert alpha["last_conv"] == 1.0 and alpha["stem"] == 0.5
    assert alpha["stage2.out"] == pytest.approx(16 / 24)  # 24 * 0.5 = 12 rounds up to 16


@pytest.mark.parametrize("width_mult", [0.35, 0.0, 1.4])
def test_width_mults_outside_the_space_are_refused(v2, width_mult: float) -> None:
    with pytest.raises(ValueError, match=f"--width-mult {width_mult:g}"):
        v2.torchvision_config(width_mult)


def test_architectures_without_them_say_so() -> None:
    with pytest.raises(ValueError, match="resnet20: no torchvision width_mult networks"):
        build_model("resnet20").torchvision_config(0.5)


def test_slim_candidates_are_torchvision_networks(v2) -> None:
    s = Slim(seed=0, num_candidates=12, torchvision_widths=True)
    s.setup(v2, 10)
    configs = s.candidates(v2)
    matched = 0
    for width_mult in widths_spread_over_macs(v2, 12):
        tv = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=10)
        tv_channels = [m.out_channels for m in tv.modules() if isinstance(m, torch.nn.Conv2d)]
        try:
            config = v2.torchvision_config(width_mult)
        except ValueError:  # a group below the space's floor: torchvision's network is not in the space
            assert min(c / f for c, f in zip(tv_channels, _full_channels(), strict=True)) < v2.space.low
            continue
        assert config in configs
        assert v2.params(config) == sum(p.numel() for p in tv.parameters())
        matched += 1
    assert matched == len(configs) >= 8 and configs[-1] == [1.0] * v2.space.dims


def _full_channels() -> list[int]:
    full = torchvision.models.mobilenet_v2(num_classes=10)
    return [m.out_channels for m in full.modules() if isinstance(m, torch.nn.Conv2d)]


def test_independent_trains_the_torchvision_network_and_others_are_refused_early(v2) -> None:
    ind = Independent(seed=0, width=0.75, torchvision_widths=True)
    ind.setup(v2, 10)
    assert ind.config(v2) == v2.torchvision_config(0.75)
    with pytest.raises(ValueError, match="no torchvision width_mult networks"):
        Independent(seed=0, width=0.5, torchvision_widths=True).setup(build_model("resnet20"), 10)
    with pytest.raises(
        TrainingError, match="--torchvision-widths applies to --algorithm slim or independent"
    ):
        TrainConfig(algorithm="pareco", arch="mobilenet_v2", torchvision_widths=True).validate()


def test_pareco_flops_width_mult(cli) -> None:
    r = cli("flops", "--arch", "mobilenet_v2", "--width-mult", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    assert "97.13" in r.stdout or '"mflops": 97.13' in r.stdout
    r = cli("flops", "--arch", "resnet20", "--width-mult", "0.5")
    assert r.returncode == 2 and "no torchvision width_mult networks" in r.stderr
