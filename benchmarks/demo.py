"""The main job on the embedded default, end to end (``bash scripts/demo.sh``).

1. the model zoo's cost table (exact, analytic MACs and parameters);
2. ``pareco train``: a slimmable ResNet20 on scikit-learn's bundled digits (no download);
3. ``pareco show``: the Pareto front it found;
4. ``pareco select`` under a FLOPs budget and a battery level;
5. ``pareco export`` of the chosen point to ONNX and ExecuTorch, each checked against PyTorch;
6. ``pareco bench``: batch-1 latency of every point on torch eager, onnxruntime and ExecuTorch,
   written into the manifest as a device profile;
7. ``pareco select`` under a latency budget on that profile, and the front plot;
8. bring your own model: a torchvision ResNet-18 whose weights the user already has (here: two
   epochs of plain PyTorch training on an ImageFolder of digits PNGs) becomes slimmable with
   ``pareco train --arch torchvision:resnet18 --init start.pt``, then ``select`` and ``export``.

Each step prints the command it runs, so the same can be typed by hand. A finished run in
``--out`` is reused (pass ``--fresh`` to retrain).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from pareco_cli.output import print_table
from pareco_runtime import ARCHITECTURES, Front, build_model


def zoo_table() -> None:
    rows = []
    for arch in ARCHITECTURES:
        m = build_model(arch)
        for w in (1.0, m.space.low):
            a = m.space.uniform(w)
            rows.append((arch, m.space.dims, f"{w:g}", f"{m.macs(a) / 1e6:.2f}", f"{m.params(a) / 1e6:.3f}"))
    print_table(
        "model zoo (MFLOPs = multiply-accumulates at the default input size)",
        ["arch", "dims", "width", "MFLOPs", "Mparams"],
        rows,
    )


def pareco(*args: str, capture: bool = False) -> str:
    """Run ``pareco ARGS`` as a user would, echoing the command; stop the demo if it fails.

    Unless its output is captured, the command's stderr (its progress) goes where the demo's stdout
    goes, so that ``bash scripts/demo.sh | tee demo.log`` shows and keeps it (as plain lines: the
    progress bar is drawn only on a terminal).
    """
    print(f"\n$ pareco {' '.join(shlex.quote(a) for a in args)}", flush=True)
    r = subprocess.run(
        [sys.executable, "-m", "pareco_cli.main", *args],
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=None if capture else subprocess.STDOUT,
    )
    if r.returncode != 0:
        sys.exit(f"demo stopped: 'pareco {args[0]}' exited with {r.returncode}")
    return r.stdout or ""


def write_digits_folder(root: Path) -> None:
    """scikit-learn's digits as an ImageFolder of 32x32 RGB PNGs (train/ and test/, 80/20 per class)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        split = "test" if i % 5 == 0 else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255 / 16)).astype("uint8")
        Image.fromarray(pixels).convert("RGB").resize((32, 32)).save(folder / f"{i:04d}.png")


def plain_pytorch_start(root: Path, epochs: int = 2) -> dict[str, torch.Tensor]:
    """The weights a user has before pareco: torchvision's ResNet-18 trained the usual way, a few epochs."""
    import torchvision
    from torchvision.transforms import v2

    torch.manual_seed(0)
    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    data = torchvision.datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    model = torchvision.models.resnet18(num_classes=len(data.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.state_dict()


def bring_your_own_model(out: Path) -> None:
    """Step 8: a torchvision model and its existing weights become a slimmable front."""
    folder, start, run = out / "digits-folder", out / "resnet18-start.pt", out / "resnet18"
    if not folder.exists():
        write_digits_folder(folder)
    if not start.exists():
        print(f"\ntraining a plain torchvision ResNet-18 for 2 epochs on {folder} (the weights a user has)")
        torch.save(plain_pytorch_start(folder), start)
    manifest = run / "model.front.json"
    if not manifest.exists():
        pareco(
            "train", "--arch", "torchvision:resnet18", "--init", str(start), "--data", str(folder),
            "--epochs", "2", "--batch-size", "64", "--lr", "0.02", "--candidates", "6",
            "--calib-batches", "4", "--out", str(run), "--force",
        )  # fmt: skip
    pareco("show", str(manifest))
    cheapest = min(p.mflops for p in Front.load(manifest).points)
    budget = f"{max(cheapest * 1.01, 0.5 * max(p.mflops for p in Front.load(manifest).points)):.2f}MFLOPs"
    pareco("select", str(manifest), "--budget", budget)
    pareco("export", str(manifest), "--budget", budget, "--onnx", "--out", str(run / "export"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="run folder")
    ap.add_argument("--algorithm", default="slim", help="slim | pareco | twostage | independent")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--fresh", action="store_true", help="retrain even if --out holds a finished run")
    args = ap.parse_args()
    out = Path(args.out)
    manifest = out / "model.front.json"

    zoo_table()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if manifest.exists():
        print(f"\nreusing the finished run in {out} (pass --fresh to retrain)")
    else:
        pareco(
            "train",
            "--arch",
            "resnet20",
            "--data",
            "digits",
            "--image-size",
            "16",
            "--algorithm",
            args.algorithm,
            "--epochs",
            str(args.epochs),
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--candidates",
            "12",
            "--calib-batches",
            "4",
            "--history-size",
            "120",
            "--out",
            str(out),
            "--force",
        )
    pareco("show", str(manifest))
    points = Front.load(manifest).points
    mid = points[len(points) // 2].mflops
    chosen = json.loads(
        pareco("select", str(manifest), "--budget", f"{mid:.2f}MFLOPs", "--json", capture=True)
    )
    p = chosen["point"]
    print(f"chosen under {chosen['budget']}: {p['id']} ({p['mflops']:.2f} MFLOPs, top-1 {p['top1']:.2f}%)")
    pareco("select", str(manifest), "--budget", "battery=30%")
    pareco(
        "export",
        str(manifest),
        "--point",
        chosen["point"]["id"],
        "--onnx",
        "--executorch",
        "--out",
        str(out / "export"),
    )
    pareco(
        "bench",
        str(manifest),
        "--backend",
        "torch",
        "--backend",
        "onnxruntime",
        "--backend",
        "executorch",
        "--threads",
        "1",
        "--warmup",
        "30",
        "--runs",
        "200",
        "--update",
    )
    front = Front.load(manifest)
    phone = next(name for name in front.profile_names if name.endswith("-executorch-t1-b1"))
    times = sorted(p.latency_ms[phone] for p in front.points if phone in p.latency_ms)
    pareco("select", str(manifest), "--budget", f"{times[len(times) // 2]:.3f}ms@{phone}")
    pareco("show", str(manifest), "--plot", str(out / "front.png"))
    bring_your_own_model(out)


if __name__ == "__main__":
    main()
