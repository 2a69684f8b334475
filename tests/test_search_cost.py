"""The search's cost objective: MACs, or a latency table's prediction, exact and differentiable."""

from __future__ import annotations

import pytest
import torch

from pareco_runtime import build_model
from pareco_runtime.latency_table import LatencyTableError
from training.search_cost import CostPolynomial, LatencyCost, MacCost, search_cost

from .latency_tables import synthetic_table


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return build_model("resnet20")


def test_latency_surrogate_equals_the_table_at_integer_channels(resnet):
    lut = synthetic_table(resnet)
    cost = LatencyCost(lut, resnet)
    full_ms = lut.predict_ms(list(resnet.space.full))
    for a in resnet.space.sample(torch.Generator().manual_seed(3), 8):
        alpha = [round(x * f) / f for x, f in zip(a, resnet.space.full)]
        expected = lut.predict_ms(resnet.space.channels(alpha)) / full_ms
        assert cost(torch.tensor(alpha, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)
        assert cost.fraction(alpha) == pytest.approx(expected, rel=1e-12)
    assert cost.fraction(resnet.space.uniform(1.0)) == pytest.approx(1.0)
    assert cost.name == "latency@phone"


def test_latency_surrogate_is_batched_and_has_a_gradient(resnet):
    cost = LatencyCost(synthetic_table(resnet), resnet)
    alpha = torch.tensor(resnet.space.sample(torch.Generator().manual_seed(4), 5), dtype=torch.float64)
    alpha.requires_grad_(True)
    value = cost(alpha.unsqueeze(1))  # the b x q x d shape the acquisition passes
    assert value.shape == (5, 1)
    value.sum().backward()
    assert alpha.grad is not None and bool((alpha.grad > 0).all())  # wider costs more on this table


def test_a_table_of_another_network_is_refused(resnet):
    other = build_model("mobilenet_v2")
    with pytest.raises(LatencyTableError, match=r"lut\.json: built for another network \(architecture"):
        LatencyCost(synthetic_table(other), resnet, "lut.json")
    lut = synthetic_table(resnet)
    lut.input_size = [3, 64, 64]
    with pytest.raises(
        LatencyTableError, match=r"input size \[3, 64, 64\] in the table, \[3, 32, 32\] in the model"
    ):
        LatencyCost(lut, resnet)


def test_widths_spread_over_latency_are_evenly_spaced(resnet):
    cost = LatencyCost(synthetic_table(resnet), resnet)
    widths = cost.widths_spread(6)
    assert widths[0] == resnet.space.low and widths[-1] == 1.0
    fractions = [cost.fraction(resnet.space.uniform(w)) for w in widths]
    step = (fractions[-1] - fractions[0]) / 5
    for k, f in enumerate(fractions):
        assert f == pytest.approx(fractions[0] + k * step, abs=0.02)


def test_search_cost_reads_a_saved_table_or_defaults_to_macs(resnet, tmp_path):
    assert isinstance(search_cost(resnet), MacCost)
    path = tmp_path / "m.lut.phone.json"
    synthetic_table(resnet).save(path)
    cost = search_cost(resnet, path)
    assert isinstance(cost, LatencyCost) and cost.lut.profile == "phone"
    macs = MacCost(resnet)
    alpha = resnet.space.uniform(0.5)
    assert macs.fraction(alpha) == resnet.macs(alpha) / resnet.macs(resnet.space.uniform(1.0))
    assert macs(torch.tensor(alpha, dtype=torch.float64)).item() == pytest.approx(
        CostPolynomial.from_model(resnet)(torch.tensor(alpha, dtype=torch.float64)).item()
    )
