"""A sliced model needs only torch: ``torch.save(rt.standalone(p))`` loads in a process that cannot import
pareco, torchvision or timm, outside the repository, and gives the slimmable model's outputs exactly."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from pareco_runtime import SlimmableRuntime, build_model, make_slimmable, slice_model

from .user_models import UserCNN

# Run in a fresh interpreter whose cwd is a temporary folder: every import of the blocked packages fails
# (pareco is installed in the venv as an editable package, so it would otherwise import from anywhere).
LOADER = """
import json, sys

BLOCKED = {"pareco_runtime", "training", "export", "bench", "pareco_cli", "benchmarks", "tests",
           "torchvision", "timm"}


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"import of {name} blocked")
        return None


sys.meta_path.insert(0, Blocked())
import torch

report = {}
for name in sys.argv[1:]:
    try:
        model = torch.load(f"{name}.pt", weights_only=False)
        io = torch.load(f"{name}.io.pt")
        with torch.no_grad():
            same = torch.equal(model(io["x"]), io["y"])
        classes = sorted({type(m).__module__.partition(".")[0] for m in model.modules()})
        report[name] = {"equal": same, "classes": classes, "channels": model.channels, "arch": model.arch}
    except Exception as exc:
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
report["imported"] = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps(report))
"""


def _load_elsewhere(folder: Path, models: dict[str, nn.Module]) -> dict:
    """``torch.save`` each eval-mode model with one input and its output; load and run them in the blocked process."""
    for name, model in models.items():
        x = torch.randn(2, *model.input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.save({"x": x, "y": model(x)}, folder / f"{name}.io.pt")
        torch.save(model, folder / f"{name}.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", LOADER, *models],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _converted(net: nn.Module, size: tuple[int, int, int]) -> nn.Module:
    """``net`` converted and sliced at a random config, in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ops a conversion pins; asserted in test_convert.py
        slim = make_slimmable(net.eval(), torch.randn(1, *size)).eval()
    return slice_model(slim, slim.space.sample(torch.Generator().manual_seed(1))).eval()


def _assert_loaded_alone(report: dict, models: dict[str, nn.Module]) -> None:
    assert report.pop("imported") == []
    for name, model in models.items():
        assert report[name] == {
            "equal": True,
            "classes": ["torch"],
            "channels": model.channels,
            "arch": model.arch,
        }


@pytest.mark.slow
def test_saved_standalone_models_load_with_torch_alone(tiny_front, tmp_path):
    rt = SlimmableRuntime.load(tiny_front)
    models = {
        "resnet20": rt.standalone(rt.points[len(rt.points) // 2]),
        "user_cnn": _converted(UserCNN(), (3, 32, 32)),
    }
    _assert_loaded_alone(_load_elsewhere(tmp_path, models), models)


@pytest.mark.slow
def test_saved_zoo_torchvision_and_timm_models_load_with_torch_alone(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    timm = pytest.importorskip("timm")
    models = {}
    for arch in ("mobilenet_v2", "mobilenet_v3_large"):
        m = build_model(arch, num_classes=10, input_size=64).eval()
        models[arch] = slice_model(m, m.space.sample(torch.Generator().manual_seed(2))).eval()
    # efficientnet's stochastic depth is a torch.fx.wrap'd torchvision function: slicing inlines it.
    models["efficientnet_b0"] = _converted(torchvision.models.efficientnet_b0(num_classes=10), (3, 64, 64))
    models["timm_mobilenetv3"] = _converted(
        timm.create_model("mobilenetv3_small_100", num_classes=5), (3, 64, 64)
    )
    _assert_loaded_alone(_load_elsewhere(tmp_path, models), models)


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=(2, 3), keepdim=True)


def _gate(x: torch.Tensor) -> torch.Tensor:
    return x if bool(x.sum() > 0) else -x


# Both stay one call in a traced graph, as torchvision's stochastic_depth does.
torch.fx.wrap("_centre")
torch.fx.wrap("_gate")


class Wrapped(nn.Module):
    """A CNN whose forward calls a ``torch.fx.wrap``'d function of the user's module."""

    def __init__(self, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.conv2(_gate(x) if self.gated else _centre(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _wrapped_pair(gated: bool) -> tuple[nn.Module, nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wrapped call pins conv1; what this test looks at comes after
        slim = make_slimmable(Wrapped(gated).eval(), torch.randn(1, 3, 8, 8)).eval()
    slim.set_widths(slim.space.uniform(0.5))
    return slim, slice_model(slim)


def _calls(sub: torch.fx.GraphModule) -> list:
    """The functions and methods the standalone graph calls, in order."""
    return [n.target for n in sub.graph.nodes if n.op in ("call_function", "call_method")]


def _same_outputs(slim, sub) -> bool:
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        return torch.equal(sub(x), slim(x))


def test_a_wrapped_function_becomes_the_torch_ops_it_runs():
    slim, sub = _wrapped_pair(gated=False)
    assert _calls(sub) == [F.relu, "mean", operator.sub, F.adaptive_avg_pool2d, torch.flatten]
    assert _same_outputs(slim, sub)


def test_an_untraceable_wrapped_function_stays_a_call_and_says_so():
    with pytest.warns(
        UserWarning, match=r"slice_model: tests.test_standalone._gate stays a call .*imports tests; export it"
    ):
        slim, sub = _wrapped_pair(gated=True)
    # The ops traced before the data-dependent branch are taken out again.
    assert _calls(sub) == [F.relu, _gate, F.adaptive_avg_pool2d, torch.flatten]
    assert _same_outputs(slim, sub)


def test_standalone_keeps_the_layer_names_and_describes_its_config():
    m = build_model("resnet20", num_classes=10)
    alpha = m.space.uniform(0.5)
    sub = slice_model(m, alpha)
    assert isinstance(sub, torch.fx.GraphModule)
    assert sorted(sub.state_dict()) == sorted(m.state_dict())
    assert (sub.arch, sub.alpha, sub.channels, sub.input_size) == (
        "resnet20",
        alpha,
        m.channels(alpha),
        (3, 32, 32),
    )


def test_the_plain_twin_keeps_blocks_as_modules_and_equals_the_standalone_model():
    from pareco_runtime.slicing import plain_twin

    model = build_model("resnet20", num_classes=4, input_size=16).eval()
    alpha = model.space.sample(torch.Generator().manual_seed(3), 1)[0]
    twin, sub = plain_twin(model, alpha), slice_model(model, alpha).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(twin(x), sub(x))
    ran: list[str] = []
    twin.get_submodule("layer2.0").register_forward_pre_hook(lambda *_: ran.append("layer2.0"))
    with torch.no_grad():
        twin(x)
    assert ran == ["layer2.0"], "a block of the twin runs its own forward"
