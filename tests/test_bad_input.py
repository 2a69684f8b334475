"""Bad input, table-driven: each case is rejected by the CLI with exit 2 and one line naming the problem.

The CLI runs in-process (the ``cli`` fixture) so that the table stays cheap; ``tests/test_cli_flops.py``
and the kill-and-resume tests run real processes.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
from PIL import Image


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _resign(manifest: Path) -> None:
    """Re-hash the weight file into the manifest, so that the weight loader itself meets the damage."""
    from pareco_runtime.untrusted import sha256_file

    m = json.loads(manifest.read_text())
    m["weights"]["sha256"] = sha256_file(manifest.parent / m["weights"]["file"])
    manifest.write_text(json.dumps(m))


def _edit(manifest: Path, fn) -> None:
    m = json.loads(manifest.read_text())
    fn(m)
    manifest.write_text(json.dumps(m))


def _weights(manifest: Path) -> Path:
    return manifest.parent / "model.safetensors"


# (case id, how to damage the front copy, message fragment); each runs `pareco export --point ... --torchscript`
# so that the manifest, the weight file and the model are all read.
FRONT_CASES = [
    (
        "weights-truncated",
        lambda m: (_weights(m).write_bytes(_weights(m).read_bytes()[:5000]), _resign(m)),
        "truncated|corrupt|incomplete",
    ),
    ("weights-empty", lambda m: (_weights(m).write_bytes(b""), _resign(m)), "empty"),
    (
        "weights-header-bitflip",
        lambda m: (
            _weights(m).write_bytes(_weights(m).read_bytes()[:12] + b"\x00" + _weights(m).read_bytes()[13:]),
            _resign(m),
        ),
        "corrupt|header|JSON",
    ),
    (
        "weights-oversized-header",
        lambda m: (_weights(m).write_bytes(struct.pack("<Q", 2**40) + b"{}"), _resign(m)),
        "header",
    ),
    ("weights-missing", lambda m: _weights(m).unlink(), "missing|not found|does not exist"),
    ("weights-changed", lambda m: _weights(m).write_bytes(_weights(m).read_bytes()[:-1] + b"\x01"), "sha256"),
    ("manifest-missing-points", lambda m: _edit(m, lambda d: d.pop("points")), "points"),
    (
        "manifest-wrong-type",
        lambda m: _edit(m, lambda d: d["points"][0].update(mflops="big")),
        r"points\[0\].mflops",
    ),
    ("manifest-newer-version", lambda m: _edit(m, lambda d: d.update(format_version=99)), "newer"),
    (
        "manifest-width-outside",
        lambda m: _edit(m, lambda d: d["points"][0]["alpha"].__setitem__(0, 3.0)),
        "outside",
    ),
    (
        "manifest-other-arch",
        lambda m: _edit(m, lambda d: d["architecture"].update(arch="resnet32")),
        "another architecture|do not fit",
    ),
    (
        "manifest-unknown-arch",
        lambda m: _edit(m, lambda d: d["architecture"].update(arch="resnet99")),
        "unknown architecture",
    ),
    ("manifest-not-json", lambda m: m.write_text("{ not json"), "JSON"),
    (
        "manifest-escapes-folder",
        lambda m: _edit(m, lambda d: d["weights"].update(file="../model.safetensors")),
        "outside its folder|folder",
    ),
    (
        "manifest-absolute-weights",
        lambda m: _edit(m, lambda d: d["weights"].update(file="/etc/passwd")),
        "absolute|folder",
    ),
    ("manifest-extra-field", lambda m: _edit(m, lambda d: d.update(surprise=1)), "surprise"),
    ("manifest-empty-points", lambda m: _edit(m, lambda d: d.update(points=[])), "points"),
    (
        "manifest-duplicate-ids",
        lambda m: _edit(m, lambda d: d["points"].append(dict(d["points"][0]))),
        "more than one point",
    ),
    ("manifest-missing", lambda m: m.unlink(), "no such manifest"),
]


@pytest.mark.parametrize("case,damage,msg", FRONT_CASES, ids=[c[0] for c in FRONT_CASES])
def test_damaged_front_rejected(case, damage, msg, front_copy, tmp_path, cli):
    point = json.loads(front_copy.read_text())["points"][0]["id"]
    damage(front_copy)
    code, _, err = cli(
        "export", str(front_copy), "--point", point, "--torchscript", "--out", str(tmp_path / "exp")
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(msg, err, re.IGNORECASE), err
    assert not (tmp_path / "exp" / f"{point}.pt").exists()


def test_pickle_as_weight_file_does_not_run(front_copy, tmp_path, cli):
    marker = tmp_path / "pwned"
    _weights(front_copy).write_bytes(pickle.dumps(Payload(str(marker))))
    _resign(front_copy)
    cli("select", str(front_copy), "--budget", "1000MFLOPs")
    assert not marker.exists()
    code, _, err = cli("export", str(front_copy), "--all", "--torchscript", "--out", str(tmp_path / "e"))
    assert code == 2, err
    assert not marker.exists()


def test_pickle_as_manifest_and_checkpoint_do_not_run(tmp_path, cli):
    marker = tmp_path / "pwned"
    manifest = tmp_path / "model.front.json"
    manifest.write_bytes(pickle.dumps(Payload(str(marker))))
    code, _, _ = cli("show", str(manifest))
    assert code == 2 and not marker.exists()
    import torch

    from training.checkpoint import CheckpointError, load_checkpoint

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"x": Payload(str(marker))}, ckpt)
    with pytest.raises(CheckpointError, match="not a usable checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()


BUDGETS = [
    ("", "budget"),
    ("abc", "abc"),
    ("-5ms", "-5ms"),
    ("5", "'5'"),
    ("5 parsecs", "parsecs"),
    ("battery=120%", "battery"),
    ("nan ms", "nan"),
    ("inf MFLOPs", "inf"),
    ("1e400 MFLOPs", "1e400"),
    ("5ms@nope", "nope"),
    ("0.00001MFLOPs", "cheapest point"),
    ("5ms", "pareco bench"),
    ("2mJ", "pareco bench"),
]


@pytest.mark.parametrize("budget,msg", BUDGETS, ids=[b[0] or "empty" for b in BUDGETS])
def test_bad_budgets(budget, msg, tiny_front, cli):
    code, _, err = cli("select", str(tiny_front), "--budget", budget)
    assert code == 2 and msg.lower() in err.lower() and len(err.strip().splitlines()) == 1, err


def _img(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 8), color=0 if mode == "L" else (10, 20, 30, 255)[: len(mode)]).save(path)


def _data_missing(root: Path) -> Path:
    return root / "nope"


def _data_empty(root: Path) -> Path:
    (root / "d").mkdir()
    return root / "d"


def _data_no_images(root: Path) -> Path:
    (root / "d" / "a").mkdir(parents=True)
    (root / "d" / "a" / "notes.txt").write_text("hi")
    return root / "d"


def _data_one_class(root: Path) -> Path:
    for i in range(4):
        _img(root / "d" / "a" / f"{i}.png")
    return root / "d"


def _data_empty_class(root: Path) -> Path:
    for i in range(4):
        _img(root / "d" / "a" / f"{i}.png")
    (root / "d" / "b").mkdir()
    return root / "d"


def _data_all_corrupt(root: Path) -> Path:
    for c in "ab":
        (root / "d" / c).mkdir(parents=True)
        for i in range(3):
            (root / "d" / c / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root / "d"


def _data_bad_archive(root: Path) -> Path:
    (root / "d.tar.gz").write_bytes(b"\x1f\x8b\x08 broken")
    return root / "d.tar.gz"


DATA_CASES = [
    ("missing", _data_missing, "nope"),
    ("empty", _data_empty, "no images"),
    ("no-images", _data_no_images, "image"),
    ("one-class", _data_one_class, "one class|only one|single"),
    ("empty-class", _data_empty_class, "'b'|b\\b|empty"),
    ("all-corrupt", _data_all_corrupt, "image|corrupt"),
    ("bad-archive", _data_bad_archive, "archive|corrupt|read"),
]


@pytest.mark.parametrize("case,make,msg", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_folders(case, make, msg, tmp_path, cli):
    import re

    path = make(tmp_path)
    code, _, err = cli(
        "train",
        "--data",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--epochs",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert code == 2, err
    assert re.search(msg, err, re.IGNORECASE) and len(err.strip().splitlines()) == 1, err


def test_grayscale_and_rgba_images_are_accepted(tmp_path):
    from training.data import load_data

    for c in "ab":
        for i in range(3):
            _img(tmp_path / "d" / c / f"g{i}.png", "L")
            _img(tmp_path / "d" / c / f"r{i}.png", "RGBA")
    data = load_data(str(tmp_path / "d"), cache_dir=str(tmp_path / "cache"), device="cpu")
    x, _ = next(iter(data.val_batches(4)))
    assert x.shape[1] == 3


CLI_CASES = [
    (["train", "--algorithm", "bogus", "--out", "{tmp}/o"], "unknown algorithm"),
    (["train", "--arch", "vgg", "--data", "synthetic:64:2", "--out", "{tmp}/o"], "unknown architecture"),
    (["train", "--epochs", "0", "--out", "{tmp}/o"], "--epochs must be at least 1"),
    (["train", "--resume", "--out", "{tmp}/o"], "no run to resume"),
    (["flops", "--arch", "resnet20", "--alpha", "1,1"], "width multipliers"),
    (["flops", "--arch", "mobilenet_v2", "--width", "0.2"], "outside the space"),
    (["export", "{front}", "--all", "--out", "{tmp}/e"], "format"),
    (["export", "{front}", "--point", "zz", "--onnx", "--out", "{tmp}/e"], "zz"),
    (["bench", "{front}", "--backend", "cuda"], "cuda|CUDA"),
    (["bench", "{front}", "--backend", "tpu"], "tpu"),
]


@pytest.mark.parametrize(
    "args,msg", CLI_CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CLI_CASES)]
)
def test_bad_cli_arguments(args, msg, tiny_front, tmp_path, cli):
    import re

    args = [a.format(tmp=tmp_path, front=tiny_front) for a in args]
    code, _, err = cli(*args)
    assert code == 2, err
    assert re.search(msg, err) and len(err.strip().splitlines()) == 1, err


def test_every_train_setting_is_a_flag_of_pareco_train(cli):
    """`pareco train` offers each TrainConfig field under its flag, beside its own few run options."""
    import dataclasses
    import re

    from training.config import TrainConfig

    code, out, err = cli("train", "--help")
    assert code == 0, err
    settings = {TrainConfig.flag(f.name) for f in dataclasses.fields(TrainConfig)}
    own = {"--out", "--resume", "--force", "--device", "--cache-dir", "--log-every", "--json", "--help"}
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out)) == settings | own


@pytest.mark.parametrize(
    "algorithm,field,value",
    [
        ("slim", "epochs", "0"),
        ("slim", "lr", "0"),
        ("slim", "schedule", "step"),
        ("slim", "distill_warmup", "2"),
        ("slim", "samples", "-1"),
        ("pareco", "samples", "0"),
        ("pareco", "lambda_sampling", "gaussian"),
        ("twostage", "cost_model", "lut"),
        ("twostage", "epsilon", "1"),
        ("pareco", "remeasure", "-1"),
    ],
)
def test_bad_train_setting_names_its_flag(algorithm, field, value, tmp_path, cli):
    from training.config import TrainConfig

    flag = TrainConfig.flag(field)
    out = tmp_path / "o"
    code, _, err = cli("train", "--algorithm", algorithm, flag, value, "--out", str(out))
    assert code == 2 and err.startswith(f"error: {flag}") and len(err.strip().splitlines()) == 1, err
    assert not out.exists(), "a bad setting is refused before the out directory is touched"
