"""training.mixnmatch: MatFormer's Mix'n'Match configs follow the rule on any transformer-like width space,
and a Mix'n'Match front is built and served from a converted transformer."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pareco_runtime import Front, SlimmableRuntime, make_slimmable
from pareco_runtime.space import WidthSpace
from training.mixnmatch import ffn_dims, mixnmatch_configs, mixnmatch_front

GRAINS = [0.125, 0.25, 0.5, 0.75, 1.0]


@st.composite
def spaces(draw: st.DrawFn) -> WidthSpace:
    """A transformer's width space: per layer an optional ``heads`` dimension, then an FFN dimension."""
    layers = draw(st.integers(1, 8))
    with_heads = draw(st.booleans())
    names = [n for i in range(layers) for n in ([f"b{i}.attn.heads"] if with_heads else []) + [f"b{i}.mlp"]]
    full = [64 if n.endswith(".heads") else draw(st.sampled_from([32, 48, 128])) for n in names]
    steps = tuple(16 if n.endswith(".heads") else 1 for n in names)
    return WidthSpace(tuple(names), tuple(full), low=0.125, steps=steps)


@settings(max_examples=200, deadline=None)
@given(spaces(), st.lists(st.sampled_from(GRAINS), min_size=2, max_size=5, unique=True))
def test_configs_follow_the_rule(space: WidthSpace, grains: list[float]) -> None:
    configs = list(mixnmatch_configs(space, grains, heads=0.5))
    ffn, order = ffn_dims(space), sorted(grains)
    layers = len(ffn)
    assert len(configs) == (len(order) - 1) * layers + 1
    assert len({tuple(c) for c in configs}) == len(configs)
    for alpha in configs:
        space.validate(alpha)
        widths = [alpha[i] for i in ffn]
        assert set(widths) <= set(order)  # only the given granularities
        assert widths == sorted(widths)  # never narrower deeper
        used = sorted(set(widths))
        assert len(used) <= 2 and (len(used) == 1 or order.index(used[1]) == order.index(used[0]) + 1)
        assert all(a == 0.5 for i, a in enumerate(alpha) if i not in ffn)  # heads at the given width
    assert [configs[0][i] for i in ffn] == [order[0]] * layers
    assert [configs[-1][i] for i in ffn] == [order[-1]] * layers
    channels = [sum(space.channels(c)) for c in configs]
    assert channels == sorted(channels)  # cheapest first


def test_granularities_outside_the_space_are_refused() -> None:
    space = WidthSpace(("b0.attn.heads", "b0.mlp"), (64, 128), low=0.25, steps=(16, 1))
    with pytest.raises(ValueError, match=r"granularity 0.125 is outside the space \[0.25, 1\] of 'b0.mlp'"):
        list(mixnmatch_configs(space, [0.125, 1.0]))
    with pytest.raises(ValueError, match="at least two distinct widths"):
        list(mixnmatch_configs(space, [0.5, 0.5]))
    with pytest.raises(ValueError, match=r"heads width 0\.1 is outside the space"):
        list(mixnmatch_configs(space, [0.5, 1.0], heads=0.1))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(x)


def two_blocks() -> nn.Module:
    """The network of the front test, by name for the runtime."""
    return nn.Sequential(_Block(16, 4), _Block(16, 4))


def test_a_mixnmatch_front_is_written_from_a_converted_transformer_and_served(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the residual stream stays fixed
        model = make_slimmable(two_blocks(), x, low=0.125, arch="tests.test_mixnmatch:two_blocks")
    assert model.space.names == ("0.attn.heads", "0.mlp.0", "1.attn.heads", "1.mlp.0")

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float((m(x) - x).pow(2).mean())}

    record = {"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0}
    built = mixnmatch_front(
        tmp_path, model, [(x,)], evaluate, metric="loss", higher_is_better=False, training=record,
        granularities=[0.25, 0.5, 1.0],
    )  # fmt: skip
    front = Front.load(built.manifest)
    assert front.training.extra["candidates_from"] == "mixnmatch"
    assert front.training.extra["granularities"] == [0.25, 0.5, 1.0]
    allowed = {(1.0, a, 1.0, b) for a, b in [(0.25, 0.25), (0.25, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]}
    assert front.points and all(tuple(p.alpha) in allowed for p in front.points)
    # A front without BatchNorm (no statistics stored) loads, switches and equals its slices.
    rt = SlimmableRuntime.load(built.manifest, model=two_blocks)
    for point in [*rt.points, rt.points[0]]:
        rt.switch(point)
        with torch.no_grad():
            assert torch.equal(rt(x), rt.standalone(point).eval()(x))
