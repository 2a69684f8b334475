"""Fronts of converted models: `pareco train --arch torchvision:NAME | pkg.module:factory [--init W]`, then
the runtime, select and export work on them unchanged, and no manifest makes pareco import code."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from pareco_runtime import SlimmableRuntime, slice_model
from pareco_runtime.untrusted import FormatError

from .user_models import user_cnn

pytest.importorskip("torchvision")

TRAIN = [
    "--data",
    "synthetic:64:4",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--candidates",
    "4",
    "--calib-batches",
    "1",
    "--calib-batch-size",
    "32",
]
USER_ARCH = "tests.user_models:user_cnn"


def _small_front(tmp_path_factory, folder: str, arch: str) -> Path:
    """A one-epoch Slim front of ``arch`` on 64 synthetic 32x32 images; returns its manifest."""
    from training.config import TrainConfig
    from training.loop import train

    cfg = TrainConfig(arch=arch, data="synthetic:64:4", image_size=32, epochs=1, batch_size=32, candidates=4,
                      calib_batches=1, calib_batch_size=32)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the conversion names the ops it pins; asserted in test_convert.py
        return train(cfg, tmp_path_factory.mktemp(folder), show_progress=False)


@pytest.fixture(scope="module")
def torchvision_front(tmp_path_factory) -> Path:
    return _small_front(tmp_path_factory, "tv_front", "torchvision:mobilenet_v3_small")


def test_manifest_records_how_to_rebuild(torchvision_front):
    arch = json.loads(torchvision_front.read_text())["architecture"]
    assert arch["arch"] == "torchvision:mobilenet_v3_small"
    assert arch["kwargs"]["model"] == {"num_classes": 4}
    assert arch["kwargs"]["convert"]["input_size"] == [3, 32, 32]


@pytest.mark.slow
def test_runtime_serves_a_converted_front(torchvision_front):
    rt = SlimmableRuntime.load(torchvision_front)
    x = torch.randn(2, *rt.input_size)
    for p in rt.points:
        rt.switch(p)
        with torch.no_grad():
            assert torch.equal(rt(x), rt.standalone(p)(x))


@pytest.mark.slow
def test_select_and_export_a_converted_front(torchvision_front, tmp_path, cli):
    r = cli("select", str(torchvision_front), "--budget", "1GFLOPs", "--json")
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["point"]["id"]
    r = cli("export", str(torchvision_front), "--point", pid, "--torchscript", "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e" / f"{pid}.pt").is_file()


@pytest.fixture(scope="module")
def user_front(tmp_path_factory) -> Path:
    return _small_front(tmp_path_factory, "user_front", USER_ARCH)


def test_user_architecture_is_never_imported_on_a_manifests_word(user_front, tmp_path, cli):
    with pytest.raises(
        FormatError, match=r"is the user's own code, which pareco never imports .*model=<factory>"
    ):
        SlimmableRuntime.load(user_front)
    r = cli("export", str(user_front), "--all", "--torchscript", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "--model tests.user_models:user_cnn" in r.stderr
    rt = SlimmableRuntime.load(user_front, model=user_cnn)
    assert rt.front.architecture.arch == USER_ARCH
    r = cli(
        "export",
        str(user_front),
        "--all",
        "--torchscript",
        "--out",
        str(tmp_path / "b"),
        "--model",
        USER_ARCH,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_init_weights_are_the_start(tmp_path, cli):
    import torchvision

    torch.manual_seed(3)
    start = torchvision.models.mobilenet_v3_small(num_classes=4)
    torch.save(start.state_dict(), tmp_path / "start.pt")
    out = tmp_path / "run"
    # lr 1e-9: one epoch barely moves the weights, so the run's weights are the file's.
    r = cli(
        "train",
        "--arch",
        "torchvision:mobilenet_v3_small",
        "--init",
        str(tmp_path / "start.pt"),
        "--lr",
        "1e-9",
        "--weight-decay",
        "0",
        *TRAIN,
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    rt = SlimmableRuntime.load(out / "model.front.json")
    saved = rt.model.state_dict()
    for key, value in start.state_dict().items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.allclose(saved[key], value, atol=1e-6), key


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: torch.save({"conv.weight": torch.zeros(1)}, p),
            r"unknown key 'conv.weight' \(1 unknown in all\)",
        ),
        (
            lambda p: torch.save(
                __import__("torchvision")
                .models.mobilenet_v3_small(num_classes=4, width_mult=0.5)
                .state_dict(),
                p,
            ),
            r"'features.0.0.weight' has shape \(8, 3, 3, 3\), the model's is \(16, 3, 3, 3\)",
        ),
        (lambda p: torch.save([1, 2], p), r"holds a list, not a state_dict"),
        (lambda p: p.write_bytes(b"\x80\x04junk"), r"not a readable state_dict"),
    ],
    ids=["unknown-key", "other-width", "not-a-dict", "corrupt"],
)
def test_bad_init_is_one_line(make, message, tmp_path, cli):
    path = tmp_path / "w.pt"
    make(path)
    r = cli(
        "train",
        "--arch",
        "torchvision:mobilenet_v3_small",
        "--init",
        str(path),
        *TRAIN,
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: --init {path}: ")
    assert re.search(message, r.stderr), r.stderr


@pytest.mark.slow
def test_init_from_another_class_count_starts_a_fresh_classifier(tmp_path):
    import torchvision

    from training.config import TrainConfig
    from training.loop import build_for_data

    imagenet_like = torchvision.models.resnet18(num_classes=1000)
    torch.save(imagenet_like.state_dict(), tmp_path / "start.pt")
    cfg = TrainConfig(arch="torchvision:resnet18", init=str(tmp_path / "start.pt"))
    with pytest.warns(
        UserWarning, match=r"fc.weight, fc.bias hold 1000 classes, the data 10; the classifier starts fresh"
    ):
        slim = build_for_data(cfg, 10, (3, 32, 32))
    got = slim.state_dict()
    assert got["fc.weight"].shape == (10, 512)
    for key, value in imagenet_like.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(got[key], value), key


@pytest.mark.slow
def test_group_low_and_pin_shape_the_space(tmp_path):
    from training.config import TrainConfig, TrainingError
    from training.loop import build_for_data

    cfg = TrainConfig(arch="torchvision:resnet18", low=0.25, group_low="layer4.*=0.5", pin="layer1.*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = build_for_data(cfg, 10, (3, 32, 32))
    floor = dict(zip(slim.space.names, slim.space.floor))
    assert {n: f for n, f in floor.items() if n.startswith("layer4")} == {
        "layer4.0.conv1": 0.5, "layer4.0.conv2": 0.5, "layer4.1.conv1": 0.5
    }  # fmt: skip
    assert all(f == 0.25 for n, f in floor.items() if not n.startswith("layer4"))
    assert not any(n.startswith("layer1") for n in slim.space.names)
    assert slim.macs(slim.space.smallest()) < slim.macs(slim.space.uniform(1.0))
    for bad, message in (
        (TrainConfig(arch="torchvision:resnet18", group_low="layer9.*=0.5"), "--group-low pattern 'layer9.*' matches no width dimension"),
        (TrainConfig(arch="torchvision:resnet18", pin="nope*"), "--pin pattern 'nope\\*' matches no"),
        (TrainConfig(arch="torchvision:resnet18", group_low="layer4"), "--group-low: 'layer4' is not PATTERN=WIDTH"),
    ):  # fmt: skip
        with pytest.raises(TrainingError, match=message):
            bad.validate()
            build_for_data(bad, 10, (3, 32, 32))
    with pytest.raises(TrainingError, match="--group-low applies to a converted --arch only"):
        TrainConfig(arch="resnet20", group_low="*=0.5").validate()
    with pytest.raises(TrainingError, match="--group-low width of 'layer4' must be in"):
        TrainConfig(arch="torchvision:resnet18", group_low="layer4=0.1").validate()


def test_unknown_library_model_is_one_line(tmp_path, cli):
    r = cli("train", "--arch", "torchvision:resnet_nope", *TRAIN, "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "torchvision has no classification model 'resnet_nope'" in r.stderr


@pytest.mark.slow
def test_timm_models_convert_exactly():
    timm = pytest.importorskip("timm")
    from torch.utils.flop_counter import FlopCounterMode

    from pareco_runtime import make_slimmable

    for name in ("resnet18", "mobilenetv3_small_100"):
        original = timm.create_model(name, pretrained=False, num_classes=5).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # timm's fused BatchNormAct2d and Linear slim: nothing pinned
            slim = make_slimmable(original, torch.randn(1, 3, 64, 64)).eval()
        assert list(slim.pinned) in (["fc"], ["classifier"]), slim.pinned
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert (slim(x) - original(x)).abs().max().item() <= 1e-6
        alpha = slim.space.sample(torch.Generator().manual_seed(0))
        sub = slice_model(slim, alpha).eval()
        slim.set_widths(alpha)
        with torch.no_grad():
            assert torch.equal(sub(x), slim(x)), name
            with FlopCounterMode(display=False) as counter:
                sub(x[:1])
        assert counter.get_total_flops() == 2 * slim.macs(alpha), name


def test_every_algorithm_keeps_to_per_group_lows():
    from pareco_runtime import make_slimmable
    from training.config import TrainConfig
    from training.pareco import PareCO, TwoStage
    from training.strategies import Slim

    slim = make_slimmable(user_cnn(4), torch.zeros(1, 3, 16, 16), low=0.25, lows={"stem*": 0.75})
    floor = slim.space.floor
    assert max(floor) == 0.75 and min(floor) == 0.25
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 4, (8,))
    pareco = PareCO(TrainConfig(algorithm="pareco", samples=2, history_size=8, probe_batch=8))
    twostage = TwoStage(TrainConfig(algorithm="twostage", samples=2))
    for strategy in (Slim(seed=0, samples=3), pareco, twostage):
        strategy.setup(slim, 8)
        for step in range(3):
            for config in strategy.step_configs(step, slim, (x, y)):
                slim.space.validate(config)
        assert strategy.step_configs(3, slim, (x, y))[-1] == list(floor)
    assert pareco.bounds[0].tolist() == list(floor)
