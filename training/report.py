"""What the end of a training run tells the user: the BO schedule it ran, and fronts that need more work."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

# A point this close to guessing learned nothing; neighbours this far apart in MACs leave budgets
# between them served by the cheaper point only.
CHANCE_MARGIN = 1.25
MAX_MAC_GAP = 3.0


def front_warnings(points: Sequence[Any], num_classes: int) -> list[str]:
    """One line per problem of a front (``points`` with ``macs`` and ``top1`` in %, sorted by MACs), with
    what to do: points at chance level, and MAC gaps wider than 3x between neighbours."""
    out = []
    chance = 100.0 / num_classes
    weak = [p for p in points if p.top1 < CHANCE_MARGIN * chance]
    if weak:
        out.append(
            f"{len(weak)} of {len(points)} front points are at chance level (top-1 <= "
            f"{max(p.top1 for p in weak):.1f}%, chance {chance:.1f}%); train more epochs (--epochs) "
            f"or check the data and --lr"
        )
    for a, b in itertools.pairwise(points):
        if a.macs > 0 and b.macs / a.macs > MAX_MAC_GAP:
            out.append(
                f"the front has no point between {a.macs / 1e6:.2f} and {b.macs / 1e6:.2f} MFLOPs "
                f"({b.macs / a.macs:.1f}x); evaluate more candidates (--candidates) or train longer"
            )
    return out


def bo_line(record: Mapping[str, Any], history_size: int | None) -> str | None:
    """How often PareCO's BO ran and its share of the time (None for algorithms without a BO loop)."""
    interval = record.get("bo_interval_steps")
    if interval is None:
        return None
    how = (
        "set by --history-size" if history_size else "from the run's length; set --history-size to change it"
    )
    return (
        f"BO every {interval} step(s), |H| {record['history_size']} ({how}), "
        f"{record['bo_time_share']:.0%} of the training time"
    )
