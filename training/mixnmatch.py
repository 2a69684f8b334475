"""MatFormer's Mix'n'Match: sub-models of a transformer whose FFN widths mix a few trained granularities.

MatFormer (Devvrit, Kudugunta, Kusupati et al., "MatFormer: Nested Transformer for Elastic Inference",
NeurIPS 2024) trains nested FFN blocks at a few granularities (fractions of the hidden units, the same
in every layer) and then extracts sub-models that use different granularities in different layers,
"Mix'n'Match", chosen by a heuristic rather than a search, which a summary of the paper describes as
preferring "balanced configurations that minimize layer granularity changes". This module makes a rule
exact (never narrower with depth is our reading, docs/task-transformers.md says what was checked), as
the baseline a PareCO front is compared with:

* every FFN width is one of the granularities;
* through depth the granularity never decreases, and a config uses at most two granularities that are
  neighbours in the sorted list (one step up, at one layer);
* so, for granularities g_1 < ... < g_K and L FFN layers, the configs are "the first s layers at g_k,
  the rest at g_(k+1)" for k < K and s = L, ..., 1, then every layer at g_K: (K - 1) L + 1 configs,
  from all at g_1 to all at g_K, each costing more than the one before.

Attention heads are not nested by MatFormer: a dimension named ``*.heads`` (as
:func:`pareco_runtime.make_slimmable` names them) stays at ``heads`` (default full width). Every other
dimension is taken for an FFN width, in the space's order, which is depth order for the networks
``make_slimmable`` converts. :func:`mixnmatch_front` scores the configs with the user's own
``evaluate`` through :func:`training.build_front`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pareco_runtime.manifest import Metric
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.space import WidthSpace

from .batch_loss import Batch
from .front_builder import BuiltFront, Evaluate, build_front

GRANULARITIES = (0.125, 0.25, 0.5, 1.0)  # the paper's four: S, M, L, XL hidden units as 1/8 to 1 of XL
HEADS_SUFFIX = ".heads"


def ffn_dims(space: WidthSpace) -> list[int]:
    """Indices of the dimensions Mix'n'Match varies: every one not named ``*.heads``, in space order."""
    return [i for i, name in enumerate(space.names) if not name.endswith(HEADS_SUFFIX)]


def _checked(space: WidthSpace, granularities: Sequence[float], heads: float) -> tuple[float, ...]:
    """``granularities`` sorted, each a width every FFN dimension allows (ValueError naming the first that is not)."""
    grains = tuple(sorted({float(g) for g in granularities}))
    ffn = ffn_dims(space)
    if len(grains) < 2:
        raise ValueError(
            f"Mix'n'Match granularities {list(granularities)}: give at least two distinct widths"
        )
    if not ffn:
        raise ValueError(
            f"Mix'n'Match: the width space has no FFN dimension (only {', '.join(space.names[:3])}); "
            "make the model slimmable with make_slimmable first"
        )
    for g in grains:
        for i in ffn:
            if not space.floor[i] <= g <= space.high:
                raise ValueError(
                    f"Mix'n'Match granularity {g:g} is outside the space [{space.floor[i]:g}, {space.high:g}] "
                    f"of '{space.names[i]}'; choose granularities inside it (or a lower low for make_slimmable)"
                )
    for i, name in enumerate(space.names):
        if name.endswith(HEADS_SUFFIX) and not space.floor[i] <= heads <= space.high:
            raise ValueError(
                f"Mix'n'Match heads width {heads:g} is outside the space [{space.floor[i]:g}, {space.high:g}] "
                f"of '{name}'; choose one inside it"
            )
    return grains


def mixnmatch_configs(
    space: WidthSpace, granularities: Sequence[float] = GRANULARITIES, heads: float = 1.0
) -> Iterator[list[float]]:
    """Mix'n'Match's configs of ``space``, cheapest first: FFN widths from ``granularities``, never
    decreasing through depth, at most one step between neighbouring granularities (the module's rule);
    ``*.heads`` dimensions at ``heads``. ValueError where a granularity or ``heads`` is outside the space.
    """
    grains = _checked(space, granularities, heads)
    ffn = ffn_dims(space)

    def config(widths: Sequence[float]) -> list[float]:
        alpha = [heads] * space.dims
        for i, w in zip(ffn, widths):
            alpha[i] = w
        return alpha

    layers = len(ffn)
    for low, high in itertools.pairwise(grains):
        for s in range(layers, 0, -1):
            yield config([low] * s + [high] * (layers - s))
    yield config([grains[-1]] * layers)


def mixnmatch_front(
    out_dir: str | Path,
    model: SlimmableNet,
    calib_batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    evaluate: Evaluate,
    *,
    metric: str | Metric,
    training: Mapping[str, Any],
    granularities: Sequence[float] = GRANULARITIES,
    heads: float = 1.0,
    **build_kwargs: Any,
) -> BuiltFront:
    """The front of ``model``'s Mix'n'Match configs: :func:`training.build_front` on
    :func:`mixnmatch_configs` (``calib_batches``, ``evaluate``, ``metric`` and the other keywords
    as there). The training record's ``extra`` says the candidates were Mix'n'Match's and at which
    granularities; its ``algorithm`` stays the one that trained the weights."""
    configs = list(mixnmatch_configs(model.space, granularities, heads))
    extra = {
        **dict(training.get("extra") or {}),
        "candidates_from": "mixnmatch",
        "granularities": sorted({float(g) for g in granularities}),
        "heads_width": heads,
    }
    return build_front(
        out_dir,
        model,
        configs,
        calib_batches,
        evaluate,
        metric=metric,
        training={**training, "extra": extra},
        **build_kwargs,
    )
