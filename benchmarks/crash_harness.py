"""Crash-safety harness: SIGKILL a training run at many moments; files stay whole, resume matches.

Run: ``.venv/bin/python -m benchmarks.crash_harness --random-kills 12`` (a few minutes). Kills are of two
kinds: at random times during a run, and injected inside the atomic writes of the checkpoint, the
weight file and the manifest — once with the temporary file half written, once just before the
rename. After every kill each of those files must be absent or load completely (the previous or
the new version, never a mix), and ``--resume`` must carry on; the run that finally completes must
hold weights bit-identical to an uninterrupted run's. Prints one line per kill and a summary.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in the child: make the n-th atomic rename onto TARGET kill the process instead.
_INJECT = r"""
import os, signal, sys
from pathlib import Path
import pareco_runtime.atomic as atomic
target, mode, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_replace, seen = os.replace, [0]
def replace(src, dst):
    if Path(dst).name == target:
        seen[0] += 1
        if seen[0] == nth:
            if mode == "mid":
                with open(src, "r+b") as fh:
                    fh.truncate(max(1, os.path.getsize(src) // 2))
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
atomic.os.replace = replace
sys.argv = ["pareco"] + sys.argv[4:]
from pareco_cli.main import main
main()
"""

FILES = ("checkpoint.pt", "model.safetensors", "model.front.json")


def train_args(out: Path, epochs: int, resume: bool) -> list[str]:
    """A small, deterministic Slim run (synthetic data) into ``out``."""
    args = [
        "train",
        "--arch",
        "resnet20",
        "--data",
        "synthetic:128:4",
        "--image-size",
        "16",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--epochs",
        str(epochs),
        "--candidates",
        "4",
        "--calib-batches",
        "1",
        "--calib-batch-size",
        "32",
        "--out",
        str(out),
        "--log-every",
        "1",
    ]
    return args + (["--resume"] if resume else ["--force"])


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_to_end(out: Path, epochs: int, resume: bool) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pareco_cli.main", *train_args(out, epochs, resume)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
    )
    if r.returncode != 0:
        raise RuntimeError(f"training failed: {r.stderr.strip()[-500:]}")


def check_files(out: Path) -> list[str]:
    """Each file absent or loading completely; returns the names present."""
    from pareco_runtime import Front
    from pareco_runtime.weights_file import load_weights
    from training.checkpoint import load_checkpoint

    present = []
    for name in FILES:
        path = out / name
        if not path.exists():
            continue
        present.append(name)
        if name == "checkpoint.pt":
            load_checkpoint(path)
        elif name == "model.safetensors":
            load_weights(path)
        else:
            Front.load(path, verify_weights=(out / "model.safetensors").exists())
    return present


@dataclass
class Kill:
    """One kill: injected into a write (target, mode, n-th write) or at a time after start."""

    target: str = ""
    mode: str = ""
    nth: int = 0
    delay: float = 0.0

    def describe(self) -> str:
        if self.target:
            return f"{self.mode:>13} write #{self.nth} of {self.target}"
        return f"at {self.delay:5.2f} s"


def kill_once(out: Path, epochs: int, kill: Kill, resume: bool) -> bool:
    """Start a run, kill it as ``kill`` says; returns False if it finished before the kill."""
    args = train_args(out, epochs, resume)
    if kill.target:
        cmd = [sys.executable, "-c", _INJECT, kill.target, kill.mode, str(kill.nth), *args]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
        return r.returncode == -signal.SIGKILL
    proc = subprocess.Popen(
        [sys.executable, "-m", "pareco_cli.main", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    time.sleep(kill.delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def weights_equal(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def harness(kills: list[Kill], epochs: int, workdir: Path) -> tuple[int, int]:
    """Apply ``kills`` in order to one run, resuming after each; returns (kills landed, survived)."""
    ref, out = workdir / "reference", workdir / "killed"
    run_to_end(ref, epochs, resume=False)
    landed = survived = 0
    started = False
    for k in kills:
        did = kill_once(out, epochs, k, resume=started)
        started = True
        if not did:
            print(f"  {k.describe()}: run finished first (not counted)")
            if (out / "model.front.json").exists():
                for name in FILES:
                    (out / name).unlink(missing_ok=True)
                started = False
            continue
        landed += 1
        try:
            present = check_files(out)
        except ValueError as exc:
            print(f"  {k.describe()}: FILE DAMAGED: {exc}")
            continue
        survived += 1
        print(f"  {k.describe()}: killed; intact: {', '.join(present) or 'nothing written yet'}")
    run_to_end(out, epochs, resume=started)
    same = weights_equal(ref / "model.safetensors", out / "model.safetensors")
    print(
        f"final weights after all kills and resumes {'equal' if same else 'DIFFER FROM'} the uninterrupted run's"
    )
    return landed, survived if same else 0


def default_kills(random_kills: int, seed: int, max_delay: float) -> list[Kill]:
    """Injected kills in every write (half-written and before rename) plus ``random_kills`` timed ones."""
    kills = [Kill(target=t, mode=m, nth=1) for t in FILES for m in ("mid", "before-rename")]
    kills += [Kill(target="checkpoint.pt", mode=m, nth=2) for m in ("mid", "before-rename")]
    rng = random.Random(seed)
    kills += [Kill(delay=rng.uniform(2.0, max_delay)) for _ in range(random_kills)]
    rng.shuffle(kills)
    return kills


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random-kills", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-delay", type=float, default=15.0, help="latest random kill, seconds after start")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    kills = default_kills(args.random_kills, args.seed, args.max_delay)
    with tempfile.TemporaryDirectory() as tmp:
        landed, survived = harness(kills, args.epochs, Path(tmp))
    print(
        f"{len(kills)} kill points tried, {landed} landed, {survived} survived with intact files and an "
        "identical final result"
    )
    if survived != landed:
        sys.exit(1)


if __name__ == "__main__":
    main()
