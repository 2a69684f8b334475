"""The test session's export memo (tests/export_memo.py) replays only what the writer would write again."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from export.exporter import export_point
from export.formats import FORMATS
from tests.export_memo import ExportMemo


def _net(bias: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[4].bias += bias
    return net


def _counting(tmp_path, monkeypatch) -> list[str]:
    """A memo over a fresh store whose writer calls are counted (by file name)."""
    import export.exporter

    calls: list[str] = []
    original = export.exporter._write.write  # the session's memo wraps the real writer

    def write(*args):
        calls.append(args[2].name)
        return original(*args)

    monkeypatch.setattr(export.exporter, "_write", ExportMemo(tmp_path / "store", write))
    (tmp_path / "store").mkdir()
    return calls


def test_a_repeat_is_replayed_byte_for_byte_and_a_change_is_written(tmp_path, monkeypatch):
    calls = _counting(tmp_path, monkeypatch)
    first = export_point(_net(), (3, 8, 8), "torchscript", tmp_path / "a" / "m.pt")
    again = export_point(_net(), (3, 8, 8), "torchscript", tmp_path / "b" / "m.pt")
    assert calls == ["m.pt"], "the repeat was replayed"
    assert again.path.read_bytes() == first.path.read_bytes() and again.sha256 == first.sha256
    export_point(_net(bias=1.0), (3, 8, 8), "torchscript", tmp_path / "c" / "m.pt")
    export_point(_net(), (3, 8, 8), "torchscript", tmp_path / "d" / "m.pt", batch=1, opset=None, seed=1)
    export_point(_net(), (3, 8, 8), "torchscript", tmp_path / "e" / "other.pt")
    assert calls == ["m.pt", "m.pt", "m.pt", "other.pt"], "other weights, inputs or names are written"


def test_a_replaced_writer_is_always_called(tmp_path, monkeypatch):
    calls = _counting(tmp_path, monkeypatch)
    monkeypatch.setitem(FORMATS, "torchscript", replace(FORMATS["torchscript"]))
    for folder in "ab":
        export_point(_net(), (3, 8, 8), "torchscript", tmp_path / folder / "m.pt")
    assert calls == ["m.pt", "m.pt"]
