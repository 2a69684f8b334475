"""A manifest sizes the network it names, never says where weights come from: builder keyword arguments
come from an allow-list per builder (torchvision, timm, the user's factory, make_slimmable's settings)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from pareco_runtime import SlimmableRuntime, make_slimmable
from pareco_runtime.sources import original_module
from pareco_runtime.untrusted import FormatError

from .test_convert_front import _small_front
from .user_models import user_cnn

pytest.importorskip("torchvision")


@pytest.mark.parametrize(
    ("arch", "kwargs", "field"),
    [
        ("timm:resnet18", {"checkpoint_path": "/etc/passwd"}, "checkpoint_path"),
        ("timm:resnet18", {"pretrained_cfg_overlay": {"file": "/tmp/w.pth"}}, "pretrained_cfg_overlay"),
        ("timm:resnet18", {"pretrained": True}, "pretrained"),
        ("timm:resnet18", {"cache_dir": "cache"}, "cache_dir"),
        ("timm:resnet18", {"features_only": True}, "features_only"),
        ("torchvision:resnet18", {"weights": "DEFAULT"}, "weights"),
        ("torchvision:resnet18", {"weights_backbone": "DEFAULT"}, "weights_backbone"),
        ("torchvision:resnet18", {"progress": True}, "progress"),
        ("tests.user_models:user_cnn", {"num_classes": 3, "checkpoint": "w.pt"}, "checkpoint"),
        ("tests.user_models:user_cnn", {"init_path": "w"}, "init_path"),
        ("tests.user_models:user_cnn", {"depth": 3}, "depth"),  # not a parameter it declares
        ("tests.user_models:user_cnn", {"num_classes": "https://example.com/w.pt"}, "num_classes"),
    ],
)
def test_builder_arguments_outside_the_allow_list_are_refused(arch: str, kwargs: dict[str, Any], field: str):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    factory = user_cnn if arch.startswith("tests.") else None
    with pytest.raises(ValueError) as info:
        original_module(arch, kwargs, factory)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"architecture.kwargs.model.{field}: ")
    assert message.endswith("remove it from the manifest")


def test_shape_arguments_pass():
    assert original_module("torchvision:resnet18", {"num_classes": 3}).fc.out_features == 3
    assert original_module("tests.user_models:user_cnn", {"num_classes": 5}, user_cnn).head.out_features == 5


def test_a_conversion_never_records_a_weight_source():
    with pytest.raises(ValueError, match=r"^model_kwargs\.pretrained: "):
        make_slimmable(
            user_cnn(),
            torch.zeros(1, 3, 16, 16),
            arch="tests.user_models:user_cnn",
            model_kwargs={"pretrained": 1},
        )


@pytest.fixture(scope="module")
def converted_front(tmp_path_factory) -> Path:
    """A one-epoch front of torchvision's MobileNetV3-Small (see test_convert_front)."""
    return _small_front(tmp_path_factory, "converted", "torchvision:mobilenet_v3_small")


def _edited(front: Path, tmp_path: Path, section: str, change: dict[str, Any]) -> Path:
    """A copy of ``front``'s manifest beside its weights, ``architecture.kwargs[section]`` updated."""
    document = json.loads(front.read_text())
    document["architecture"]["kwargs"][section].update(change)
    edited = front.with_name(f"edited-{tmp_path.name}.front.json")
    edited.write_text(json.dumps(document))
    return edited


@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "change", "field"),
    [
        ("model", {"weights": "IMAGENET1K_V1"}, r"architecture\.kwargs\.model\.weights"),
        ("model", {"dropout": "/etc/passwd"}, r"architecture\.kwargs\.model\.dropout"),
        ("convert", {"model_kwargs": {}}, r"architecture\.kwargs\.convert\.model_kwargs"),
        ("convert", {"pin": 5}, r"architecture\.kwargs\.convert: "),
    ],
)
def test_an_edited_manifest_is_one_line_at_load(
    converted_front, tmp_path, cli_process, section, change, field
):
    edited = _edited(converted_front, tmp_path, section, change)
    try:
        with pytest.raises(FormatError, match=field):
            SlimmableRuntime.load(edited)
        result = cli_process("export", str(edited), "--all", "--torchscript", "--out", str(tmp_path / "e"))
    finally:
        edited.unlink()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(field, lines[0]) and "Traceback" not in result.stderr
    assert not (tmp_path / "e").exists()


def test_a_factory_taking_any_keyword_gets_the_class_count_only():
    def net(**kwargs: Any) -> torch.nn.Module:
        return user_cnn(**kwargs)

    assert original_module("my.models:net", {"num_classes": 3}, net).head.out_features == 3
    with pytest.raises(ValueError, match=r"^architecture\.kwargs\.model\.classes: .*takes only num_classes"):
        original_module("my.models:net", {"classes": 3}, net)
