"""make_slimmable's coupling rules are a table: an op is known by one entry, and unknown without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import ConversionError, make_slimmable, slice_model
from pareco_runtime.coupling import FUNCTION_RULES, METHOD_RULES, MODULE_RULES, PASS

SIZE = (3, 16, 16)


class Softsigns(nn.Module):
    """Three ops pareco's tables leave out: a module, a function and a tensor method, each per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Softsign()
        self.b = nn.Conv2d(8, 12, 3, padding=1)
        self.c = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.erf(self.b(self.act(self.a(x))))
        return self.fc(self.c(y).erf().mean((2, 3)))


def _convert(**settings) -> nn.Module:
    return make_slimmable(Softsigns().eval(), torch.randn(1, *SIZE), **settings).eval()


def test_an_op_without_an_entry_is_named():
    with pytest.raises(ConversionError, match=r"^make_slimmable: act \(act\): Softsign is not a layer"):
        _convert(on_unsupported="error")


def test_one_entry_each_makes_the_ops_known(monkeypatch):
    monkeypatch.setitem(MODULE_RULES, nn.Softsign, PASS)
    monkeypatch.setitem(FUNCTION_RULES, torch.erf, PASS)
    monkeypatch.setitem(METHOD_RULES, "erf", PASS)
    slim = _convert()
    assert slim.space.names == ("a", "b", "c") and set(slim.pinned) == {"fc"}
    alpha = [0.5, 0.25, 0.75]
    sub = slice_model(slim, alpha).eval()
    slim.set_widths(alpha)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(sub(x), slim(x))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        sub(torch.zeros(1, *SIZE))
    assert slim.macs(alpha) == counter.get_total_flops() // 2
