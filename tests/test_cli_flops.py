"""``pareco flops`` as a user runs it: in-process (``cli``), and through a real process (``cli_process``)."""

from __future__ import annotations

import json

import pytest

from pareco_runtime import build_model


def test_flops_json_matches_model(cli):
    r = cli("flops", "--arch", "mobilenet_v2", "--width", "0.42", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    m = build_model("mobilenet_v2")
    assert out["macs"] == m.macs(m.space.uniform(0.42))
    assert out["params"] == m.params(m.space.uniform(0.42))
    assert len(out["channels"]) == 25


def test_flops_alpha_and_divisor(cli):
    r = cli("flops", "--arch", "resnet20", "--alpha", "1,1,0.5,0.5,0.316,0.316", "--divisor", "8", "--json")
    assert r.returncode == 0, r.stderr
    assert all(c % 8 == 0 for c in json.loads(r.stdout)["channels"].values())


def test_flops_table(cli):
    r = cli("flops", "--arch", "resnet20", "--width", "0.5")
    assert r.returncode == 0 and "MFLOPs" in r.stdout


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--arch", "resnet21", "--width", "1"], "unknown architecture 'resnet21'"),
        (["--arch", "resnet20", "--alpha", "1,2"], "has 2 width multipliers but this space has 6"),
        (["--arch", "resnet20", "--width", "0.1"], "outside the space"),
        (["--arch", "resnet20", "--alpha", "1,x,1,1,1,1"], "'x' is not a finite number"),
        (["--arch", "resnet20"], "exactly one of --width"),
    ],
)
def test_flops_bad_input(cli, args, msg):
    r = cli("flops", *args)
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_flops(cli_process):
    r = cli_process("--help")
    assert r.returncode == 0 and "flops" in r.stdout


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_from_a_real_process(cli_process):
    r = cli_process("flops", "--arch", "resnet21", "--width", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: unknown architecture 'resnet21'") and len(r.stderr.splitlines()) == 1


def test_flops_of_a_converted_torchvision_model(cli):
    torchvision = pytest.importorskip("torchvision")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    r = cli("flops", "--arch", "torchvision:resnet18", "--width", "1", "--num-classes", "10", "--input-size", "32",
            "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        torchvision.models.resnet18(num_classes=10).eval()(torch.zeros(1, 3, 32, 32))
    assert out["macs"] == fc.get_total_flops() // 2
    assert out["input_size"] == [3, 32, 32] and len(out["channels"]) == 12
