"""make_slimmable refuses what it cannot make exact: a layer used at two call sites, a layer's tensor read by
another op, and layers sharing a tensor are pinned (or refused) with the reason at conversion time, so every
width of the result equals its standalone slice instead of failing at every width but full."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pareco_runtime import ConversionError, make_slimmable, slice_model

SIZE = (3, 8, 8)


class _Net(nn.Module):
    """A slimmable stem and head around ``middle``, the shape under test, so that its pins stay local."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(24)
        self.b = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(24)
        self.out = nn.Conv2d(24, 32, 1, bias=False)  # back to a slimmable group
        self.bn_out = nn.BatchNorm2d(32)
        self.h = nn.Linear(32, 32)
        self.fc = nn.Linear(32, 5)

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_b(self.b(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.h(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_a(self.a(F.relu(self.bn0(self.stem(x))))))
        x = F.relu(self.bn_out(self.out(self.middle(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvTwice(_Net):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_b(self.b(F.relu(self.b(x)))))


class BatchNormTwice(_Net):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_a(self.b(x)))  # bn_a normalised a's output already


class LinearTwice(_Net):
    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.h(F.relu(self.h(x)))))


class WeightReadByAnotherOp(_Net):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(F.relu(self.bn_b(self.b(x))), self.b.weight, padding=1))


class StatisticsReadByAnotherOp(_Net):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_b(self.b(x)))
        return y - self.bn_b.running_mean.view(1, -1, 1, 1)


SHAPES = [
    (ConvTwice, "the module is called more than once", {"a", "b"}),
    (BatchNormTwice, "the module is called more than once", {"a", "b"}),
    (LinearTwice, "the module is called more than once", {"out", "h"}),
    (
        WeightReadByAnotherOp,
        r"b_weight \(b\.weight\): an op reads a tensor of layer b outside it",
        {"a", "b"},
    ),
    (
        StatisticsReadByAnotherOp,
        r"an op reads a tensor of layer bn_b outside it",
        {"b", "bn_b"},
    ),
]


@pytest.mark.parametrize(("cls", "reason", "pinned"), SHAPES, ids=[s[0].__name__ for s in SHAPES])
def test_shared_use_is_pinned_with_the_reason_and_every_width_is_exact(cls, reason, pinned):
    torch.manual_seed(0)
    net = cls().eval()
    with pytest.warns(UserWarning, match=reason):
        slim = make_slimmable(net, torch.randn(1, *SIZE))
    assert pinned <= set(slim.pinned), slim.pinned
    assert slim.space.names, "the rest of the network stays slimmable"
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        full = net(x)
    for width in (1.0, 0.75, 0.5, 0.25):
        alpha = slim.space.uniform(width)
        slim.set_widths(alpha)
        slim.eval()
        with torch.no_grad():
            assert torch.equal(slim(x), slice_model(slim, alpha).eval()(x)), width
    slim.set_widths(slim.space.uniform(1.0))
    with torch.no_grad():
        assert torch.allclose(slim(x), full, atol=1e-6)


@pytest.mark.parametrize(("cls", "reason", "pinned"), SHAPES, ids=[s[0].__name__ for s in SHAPES])
def test_shared_use_refused_on_request(cls, reason, pinned):
    first = "does not know how this op couples channels" if cls is WeightReadByAnotherOp else reason
    with pytest.raises(ConversionError, match=first):
        make_slimmable(cls().eval(), torch.randn(1, *SIZE), on_unsupported="error")


class TiedWeights(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.c.weight = self.b.weight

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.c(F.relu(self.bn_b(self.b(x)))))


class OneModuleTwoNames(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.b_again = self.b

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b_again(F.relu(self.bn_b(self.b(x)))))


@pytest.mark.parametrize(
    ("cls", "names"),
    [(TiedWeights, r"'b' and 'c'.*\(c\.weight\)"), (OneModuleTwoNames, r"'b' and 'b_again'")],
)
def test_layers_sharing_a_tensor_are_refused(cls, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConversionError, match=rf"^make_slimmable: layers {names}.*untie them"):
            make_slimmable(cls().eval(), torch.randn(1, *SIZE))
