"""Training step cost: Slim's sandwich step against the standalone steps it contains, and projected epochs.

Run: ``.venv/bin/python -m benchmarks.train_speed --data ../shared/datasets/cifar10-jpg.tar.gz``
(or ``--data digits``). One Slim step trains the largest, ``M`` random and the smallest width, through
the library ``pareco train`` runs (:func:`benchmarks.library_overhead.measure`); the reference is the
same configs trained one at a time as plain steps (fresh optimiser per config), all on the same batch,
interleaved in one process. Prints per-step medians, the ratio Slim / sum of its standalone steps,
and projected epoch times.
"""

from __future__ import annotations

from benchmarks.library_overhead import report


def main() -> None:
    args, data, slim, solo = report(__doc__)
    spe = data.steps_per_epoch(args.batch_size)
    print(
        f"  projected epoch ({spe} steps): Independent(full width) {solo[0] * spe:.0f} s, Slim {slim * spe:.0f} s "
        f"({slim / solo[0]:.2f}x)"
    )


if __name__ == "__main__":
    main()
