"""The main job on the embedded default, end to end (``bash scripts/demo.sh``).

Stage 1, the model zoo's cost table: MACs and parameters of every architecture at full and
lowest uniform width (exact, analytic, equal to torch's flop counter on the sliced model).
"""

from __future__ import annotations

import argparse

from pareco_runtime import ARCHITECTURES, build_model
from pareco_runtime.cli.output import print_table


def zoo_table() -> None:
    rows = []
    for arch in ARCHITECTURES:
        m = build_model(arch)
        for w in (1.0, m.space.low):
            a = m.space.uniform(w)
            rows.append((arch, m.space.dims, f"{w:g}", f"{m.macs(a) / 1e6:.2f}", f"{m.params(a) / 1e6:.3f}"))
    print_table("model zoo (MFLOPs = multiply-accumulates at the default input size)",
                ["arch", "dims", "width", "MFLOPs", "Mparams"], rows)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    zoo_table()


if __name__ == "__main__":
    main()
