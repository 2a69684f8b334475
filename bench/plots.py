"""Front plots with matplotlib (written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pareco_runtime.atomic import atomic_path

if TYPE_CHECKING:
    from pareco_runtime.front_file import Front


def plot_front(front: Front, path: Path) -> None:
    """Top-1 against MFLOPs, and against latency for each measured profile, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in front.points if p.top1 is not None]
    if not points:
        raise ValueError("the front has no measured top-1 to plot; evaluate it first")
    profiles = [name for name in front.profile_names if any(name in q.latency_ms for q in points)]
    fig, axes = plt.subplots(1, 1 + len(profiles), figsize=(5 * (1 + len(profiles)), 4), squeeze=False)
    ax = axes[0][0]
    ax.plot([p.mflops for p in points], [p.top1 for p in points], "o-")
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{front.architecture.arch} ({front.training.algorithm})")
    ax.grid(alpha=0.3)
    for ax, name in zip(axes[0][1:], profiles):
        pts = [p for p in points if name in p.latency_ms]
        ax.plot([p.latency_ms[name] for p in pts], [p.top1 for p in pts], "o-")
        ax.set_xlabel(f"latency (ms), {name}")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_fronts(fronts: dict[str, Sequence[tuple[float, float]]], path: Path, title: str) -> None:
    """Several methods' fronts, top-1 against MFLOPs, on one axis (for comparisons)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, front in fronts.items():
        pts = sorted(front)
        ax.plot(
            [p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "s", label=name, markersize=4
        )
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
