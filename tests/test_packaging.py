"""What ``pip install pareco`` (no extras) gives a device: the runtime, and nothing heavy.

A wheel is built from the checkout and installed with no dependencies into a fresh virtual
environment; what the wheel declares as its base requirements (and their own requirements, read
from this environment's metadata) is then linked in from this environment, since installing a
CUDA build of torch for every test run would take minutes. The fresh environment must import the
runtime, load a front, switch and infer exactly as here, and see none of the extras' packages.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_PACKAGES = [
    "botorch",
    "gpytorch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "executorch",
    "typer",
    "rich",
    "matplotlib",
    "sklearn",
    "torchvision",
    "jsonschema",
]


def _base_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _closure(reqs: list[Requirement]) -> set[str]:
    """Distribution names that installing ``reqs`` pulls in, from this environment's metadata."""
    seen: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in (md.distribution(name).requires or []))
    return seen


def _link_distributions(names: set[str], into: Path) -> None:
    into.mkdir()
    for name in names:
        dist = md.distribution(name)
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if (site / top).exists() and not (into / top).exists():
                (into / top).symlink_to(site / top)


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> Path:
    """A fresh venv with the pareco wheel and its base requirements only; returns its python."""
    tmp = tmp_path_factory.mktemp("bare")
    wheels = tmp / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(wheels.glob("pareco-*.whl"))
    reqs = _base_requirements(wheel)
    assert sorted(r.name for r in reqs) == ["safetensors", "torch"], [str(r) for r in reqs]
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    _link_distributions(_closure(reqs), tmp / "base-deps")
    (site / "base_deps.pth").write_text(str(tmp / "base-deps") + "\n")
    return python


@pytest.mark.slow
def test_no_extras_install_serves_a_front(bare_env, front_copy, tmp_path):
    from pareco_runtime import SlimmableRuntime

    rt = SlimmableRuntime.load(front_copy)
    x = torch.randn(2, *rt.input_size, generator=torch.Generator().manual_seed(0))
    cheap = min(rt.points, key=lambda p: p.mflops)
    rt.switch(f"{cheap.mflops * 1.0001}MFLOPs")
    torch.save(x, tmp_path / "x.pt")
    torch.save(rt(x), tmp_path / "y.pt")
    script = f"""
import importlib.util, json, sys, torch
missing = [m for m in {EXTRAS_PACKAGES!r} if importlib.util.find_spec(m) is not None]
import pareco_runtime
from pareco_runtime import SlimmableRuntime
rt = SlimmableRuntime.load({str(front_copy)!r})
p = rt.switch("{cheap.mflops * 1.0001}MFLOPs")
x = torch.load({str(tmp_path / "x.pt")!r})
y = rt(x)
ref = torch.load({str(tmp_path / "y.pt")!r})
print(json.dumps({{"found_extras": missing, "point": p.id, "equal": bool(torch.equal(y, ref)),
                  "runtime": pareco_runtime.__file__, "heavy": sorted({{m.split('.')[0] for m in sys.modules}}
                  & set({EXTRAS_PACKAGES!r}))}}))
"""
    r = subprocess.run(
        [str(bare_env), "-I", "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["found_extras"] == [] and out["heavy"] == []
    assert out["point"] == cheap.id and out["equal"]
    assert str(ROOT) not in out["runtime"]  # the installed wheel, not the checkout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "extra"), [(["flops", "--arch", "resnet20", "--width", "1"], "cli")])
def test_command_without_its_extra_names_the_pip_install(bare_env, args, extra, tmp_path):
    r = subprocess.run(
        [str(bare_env.parent / "pareco"), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: this command needs typer, which comes with pareco's '{extra}' extra; "
        f"run: pip install 'pareco[{extra}]'"
    )


def test_every_extra_module_maps_to_a_declared_extra():
    import tomllib

    from export.formats import module_extras
    from pareco_cli.main import EXTRA_OF

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRA_OF.values()) | set(module_extras().values()) <= set(extras)
    assert {"vision", "train", "export", "mobile", "cli", "all"} <= set(extras)


def test_missing_training_extra_message():
    from pareco_cli.main import missing_extra_message

    exc = ModuleNotFoundError("No module named 'botorch'", name="botorch")
    assert missing_extra_message(exc) == (
        "this command needs botorch, which comes with pareco's 'train' extra; "
        "run: pip install 'pareco[train]'"
    )
    assert missing_extra_message(ModuleNotFoundError("x", name="not_an_extra")) is None


def test_a_foreign_package_shadowing_a_layer_is_one_line(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "pareco_cli.main", "flops", "--arch", "resnet20", "--width", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 2
    assert r.stderr.startswith(
        f"error: the package 'training' resolves to {tmp_path / 'training' / '__init__.py'}"
    )
    assert r.stderr.count("\n") == 1 and "uninstall it" in r.stderr


def test_layers_resolve_beside_the_cli():
    from pareco_cli.main import shadowed_layer_message

    assert shadowed_layer_message() is None
