"""make_slimmable beyond one image in, logits out: 1-D keyword spotting, several inputs, dict and tuple
outputs, segmentation (LRASPP) and a detector converted in part (SSDlite), each exact.

For every network: at full width it is the original, a slice at several widths equals the slimmable
model, its MACs equal torch's FLOP counter / 2, and its exported files return every output as PyTorch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import SlimmableNet, SlimmableRuntime, make_slimmable, slice_model
from pareco_runtime.manifest import DatasetSpec, FrontPoint, TrainingRecord, write_front
from pareco_runtime.ops import SlimBatchNorm1d, SlimContext, SlimConv1d
from pareco_runtime.outputs import flatten_outputs, output_names
from pareco_runtime.slicing import plain_twin

from .user_models import TwoInputNet, kws_net, lraspp, per_image_net, ssdlite

torchvision = pytest.importorskip("torchvision")

KWS_SIZE = (40, 98)
SEG_SIZE = (3, 64, 64)
KWS_ARCH = "tests.user_models:kws_net"
SEG_ARCH = "tests.user_models:lraspp"
SSD_ARCH = "tests.user_models:ssdlite"
PER_IMAGE_ARCH = "tests.user_models:per_image_net"


def _counted_macs(net: nn.Module, *inputs) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(*inputs)
    return fc.get_total_flops() // 2


def _warmed(net: nn.Module, *inputs) -> nn.Module:
    """``net`` with non-trivial BN statistics (so that full-width equality tests them), in eval mode."""
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        net(*inputs)
    return net.eval()


def _converted(net: nn.Module, example, **kwargs) -> SlimmableNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned outputs; asserted where it matters
        return make_slimmable(net, example, **kwargs).eval()


def _flat(out) -> list[torch.Tensor]:
    return [t for _, t in flatten_outputs(out)]


def _check_exact(
    original: nn.Module, slim: SlimmableNet, inputs: tuple, widths=(1.0, 0.75, 0.5, 0.25)
) -> None:
    """Full width is the original; each uniform width's slice equals the slimmable model and costs what
    torch counts."""
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in original.state_dict().items()
    ]
    with torch.no_grad():
        for got, want in zip(_flat(slim(*inputs)), _flat(original(*inputs)), strict=True):
            assert torch.equal(got, want)
    assert slim.macs(slim.space.uniform(1.0)) == _counted_macs(original, *(t[:1] for t in inputs))
    for w in widths:
        alpha = slim.space.uniform(w)
        sub = slice_model(slim, alpha).eval()
        with slim.config(alpha), torch.no_grad():
            for got, want in zip(_flat(sub(*inputs)), _flat(slim(*inputs)), strict=True):
                assert torch.equal(got, want)
        assert slim.macs(alpha) == _counted_macs(sub, *(t[:1] for t in inputs))
        assert slim.params(alpha) == sum(p.numel() for p in sub.parameters())


@pytest.mark.parametrize("depthwise", [False, True])
def test_slim_conv1d_is_the_plain_conv_of_its_slices(depthwise):
    torch.manual_seed(0)
    conv = SlimConv1d(16, 16, 3, stride=2, padding=1, groups=16 if depthwise else 1, bias=True)
    ctx = SlimContext([16, 16, 1])
    conv.bind(ctx, 0, 1)
    for cin, o in [(16, 16), (8, 12), (5, 5)]:
        i = o if depthwise else cin
        ctx.ch[:] = [i, o, 1]
        x = torch.randn(2, i, 20)
        plain = conv.to_plain()
        assert type(plain) is nn.Conv1d and plain.weight.shape == (o, 1 if depthwise else i, 3)
        with torch.no_grad():
            assert torch.equal(conv(x), plain(x))


@pytest.mark.parametrize("shape", [(4, 12), (4, 12, 7)])
def test_slim_batchnorm1d_is_the_plain_batchnorm_of_its_slices(shape):
    torch.manual_seed(0)
    bn = SlimBatchNorm1d(12)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.running_var.uniform_(0.5, 2)
        bn.running_mean.normal_()
    ctx = SlimContext([12, 1])
    bn.bind(ctx, 0, 0)
    ctx.ch[0] = 7
    x = torch.randn(shape[0], 7, *shape[2:])
    plain = bn.to_plain().eval()
    assert type(plain) is nn.BatchNorm1d and plain.num_features == 7
    with torch.no_grad():
        assert torch.equal(bn.eval()(x), plain(x))
        reference = nn.BatchNorm1d(7)
        reference.load_state_dict({k: v[:7] if v.dim() else v for k, v in bn.state_dict().items()})
        assert torch.equal(bn.train()(x), reference.train()(x))
        assert torch.equal(bn.running_mean[:7], reference.running_mean)


def test_keyword_spotter_converts_exactly():
    x = torch.randn(4, *KWS_SIZE)
    original = _warmed(kws_net(), x)
    slim = _converted(original, x[:1])
    # stem + residual (tied by the add, the depthwise conv follows), the strided conv, fc1; fc2 pinned.
    assert slim.space.names == ("stem.0", "down.0", "fc1")
    assert slim.input_size == KWS_SIZE and slim.arch_kwargs["convert"]["input_size"] == list(KWS_SIZE)
    assert slim.pinned == {"fc2": "the network's output"}
    _check_exact(original, slim, (x,))


def test_two_inputs_and_nested_outputs_convert_exactly():
    inputs = (torch.randn(3, 3, 16, 16), torch.randn(3, 4, 20))
    original = _warmed(TwoInputNet(), *inputs)
    slim = _converted(original, tuple(t[:1] for t in inputs))
    # The add of the two pooled branches ties image and signal channels into one dimension.
    assert slim.space.names == ("image.0",)
    assert slim.input_sizes == ((3, 16, 16), (4, 20))
    assert slim.arch_kwargs["convert"]["input_sizes"] == [[3, 16, 16], [4, 20]]
    _check_exact(original, slim, inputs)


def test_outputs_flatten_in_key_then_index_order():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    out = {"seg": a, "heads": (b, {"z": c, "a": a})}
    assert output_names(out) == ["seg", "heads.0", "heads.1.z", "heads.1.a"]
    assert [t for _, t in flatten_outputs(out)] == [a, b, c, a]
    assert output_names(a) == ["output"] and output_names((a, b)) == ["0", "1"]
    with pytest.raises(ValueError, match=r"output heads\.1 is a str"):
        flatten_outputs({"heads": (a, "text")})


def test_example_input_of_another_kind_is_refused_with_the_way_out():
    with pytest.raises(
        ValueError, match=r"batch-first tensor \[N, C, \.\.\.\] or a tuple of them, got shape \(40,\)"
    ):
        make_slimmable(kws_net(), torch.randn(40))
    with pytest.raises(ValueError, match="submodule 'neck' is not in KeywordSpotter; its children are stem"):
        make_slimmable(kws_net(), (torch.randn(1, *KWS_SIZE),), submodules=["neck"])


@pytest.fixture(scope="module")
def seg_pair() -> tuple[nn.Module, SlimmableNet]:
    x = torch.randn(2, *SEG_SIZE)
    original = _warmed(lraspp(), x)
    return original, _converted(original, x[:1])


@pytest.mark.slow
def test_lraspp_head_is_slimmable_and_exact(seg_pair):
    original, slim = seg_pair
    # Upsampling passes channels through: the head's 1x1 conv (cbr) and its scale branch are width
    # dimensions; only the two classifiers, whose outputs are the network's, keep their channels.
    assert "classifier.cbr.0" in slim.space.names
    assert set(slim.pinned) == {"classifier.low_classifier", "classifier.high_classifier"}
    _check_exact(original, slim, (torch.randn(2, *SEG_SIZE),), widths=(1.0, 0.5, 0.25))


@pytest.mark.slow
def test_ssdlite_converted_in_part_runs_at_every_width():
    torch.manual_seed(0)
    detector = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4
    ).eval()
    images = [torch.rand(3, 320, 320)]
    with pytest.raises(ValueError, match=r"torch\.fx cannot trace SSD .*submodules="):
        make_slimmable(detector, torch.rand(1, 3, 320, 320))
    slim = _converted(detector, (images,), submodules=["backbone", "head"])
    assert slim.space.dims > 20 and all(n.startswith("backbone.") for n in slim.space.names)
    assert [(k, v.shape) for k, v in slim.state_dict().items()] == [
        (k, v.shape) for k, v in detector.state_dict().items()
    ]
    with torch.no_grad():
        want, got = detector(images)[0], slim(images)[0]
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert slim.macs(slim.space.uniform(1.0)) == _counted_macs(detector, images)
    for w in (0.75, 0.5, 0.25):
        alpha = slim.space.uniform(w)
        twin = plain_twin(slim, alpha)  # the detector of its own class at this width
        with slim.config(alpha), torch.no_grad():
            out = slim(images)[0]
            assert all(torch.equal(out[k], twin(images)[0][k]) for k in out)
        assert slim.macs(alpha) == _counted_macs(twin, images)
    with pytest.raises(
        ValueError, match=r"slice_model: SSD was converted in parts .* as a whole.*plain_twin"
    ):
        slice_model(slim)


def test_a_conversion_in_parts_is_rebuilt_from_its_record_and_a_bad_record_is_one_line():
    from pareco_runtime.convert import rebuild

    images = [torch.rand(3, 12, 12), torch.rand(3, 9, 14)]
    slim = make_slimmable(per_image_net(), (images,), submodules=["body"], arch=PER_IMAGE_ARCH)
    kwargs = slim.describe()["kwargs"]
    again = rebuild(PER_IMAGE_ARCH, kwargs, per_image_net)
    assert again.space == slim.space and not again.takes_batches
    assert again.macs(again.space.uniform(0.5)) == slim.macs(slim.space.uniform(0.5))

    def tampered(tree: object) -> dict[str, object]:
        return {**kwargs, "convert": {**kwargs["convert"], "input_tree": tree}}

    with pytest.raises(
        ValueError, match=r"^architecture\.kwargs\.convert\.input_tree: not a nesting pareco wrote"
    ):
        rebuild(PER_IMAGE_ARCH, tampered("[1, {}]"), per_image_net)
    one_image = make_slimmable(per_image_net(), ([images[0]],), submodules=["body"]).describe()["kwargs"]
    with pytest.raises(ValueError, match=r"input_tree holds 1 tensors but 2 input sizes are recorded"):
        rebuild(PER_IMAGE_ARCH, tampered(one_image["convert"]["input_tree"]), per_image_net)
    # An example holding more than tensors (here a float) converts, but a manifest cannot rebuild it.
    scaled = make_slimmable(per_image_net(), (images, 2.0), submodules=["body"])
    assert scaled.example_inputs(generator=torch.Generator())[1] == 2.0
    with pytest.raises(
        ValueError, match=r"input_tree is missing: .* convert it on an example of tensors only$"
    ):
        rebuild(PER_IMAGE_ARCH, scaled.describe()["kwargs"], per_image_net)


@pytest.mark.slow
def test_a_front_of_a_detector_converted_in_parts_is_written_served_and_selected(tmp_path, cli):
    from training import build_front

    images = [torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(0))]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 120.0]]), "labels": torch.tensor([1])}]
    slim = make_slimmable(ssdlite().eval(), (images,), submodules=["backbone", "head"], arch=SSD_ARCH)
    built = build_front(
        tmp_path / "front",
        slim,
        [slim.space.uniform(w) for w in (0.5, 1.0)],
        [(images * 2, targets * 2)],  # two images: the last stages' BN sees 1x1 maps in training mode
        lambda m: {"score": 50.0 * float(m.alpha[0])},
        metric="score",
        # BN statistics are collected in training mode, where a torchvision detector needs its targets.
        forward=lambda m, batch: m(*batch) if m.training else m(batch[0]),
        dataset=DatasetSpec("synthetic", (3, 320, 320), [0.0] * 3, [1.0] * 3),
        training={"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0},
    )
    rt = SlimmableRuntime.load(built.manifest, model=ssdlite)
    assert [p.mflops for p in rt.points] == [slim.macs(p.alpha) / 1e6 for p in rt.points]
    cheap = rt.switch(f"{rt.points[0].mflops + 1}MFLOPs")
    assert cheap.id == "p00" and rt.active is cheap
    twin = plain_twin(slim, cheap.alpha, bn_stats=rt.bn_stats(cheap))
    with torch.no_grad():
        got, want = rt(images)[0], twin(images)[0]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    r = cli("select", str(built.manifest), "--budget", f"{rt.points[0].mflops + 1}MFLOPs", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["point"]["id"] == "p00", r.stderr
    r = cli("export", str(built.manifest), "--point", "p00", "--onnx", "--model", SSD_ARCH)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "converted in parts" in r.stderr and "plain_twin" in r.stderr
    bench = (
        "bench",
        str(built.manifest),
        "--backend",
        "torch",
        "--model",
        SSD_ARCH,
        "--warmup",
        "1",
        "--runs",
        "2",
    )
    r = cli(*bench)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "time what an app calls: --through-runtime --backend torch"
    )
    r = cli(*bench, "--through-runtime", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(m["point"] for m in json.loads(r.stdout)["measurements"]) == ["p00", "p01"]


def _front(tmp_path: Path, slim: SlimmableNet, size, mean: float) -> Path:
    """A two-point front of ``slim`` (full and half width) written by the runtime's own writer."""
    points, stats = [], {}
    for pid, w in (("p100", 1.0), ("p50", 0.5)):
        alpha = slim.space.uniform(w)
        points.append(
            FrontPoint(
                pid, alpha, slim.space.channels(alpha), slim.macs(alpha) / 1e6, slim.params(alpha), top1=50.0
            )
        )
        with slim.config(alpha):
            stats[pid] = dict(zip(slim.bn_names, slim.current_bn_stats()))
    dataset = DatasetSpec("synthetic", tuple(size), [mean] * size[0], [1.0] * size[0])
    return write_front(tmp_path, slim, points, stats, dataset, TrainingRecord("slim", 1, 0, 1.0))


# LRASPP (a MobileNetV3-large backbone) in ONNX only: its ExecuTorch lowering alone took over 50 s of the
# suite, and ExecuTorch's dict outputs are checked on a small network in test_litert_openvino.
@pytest.mark.slow
@pytest.mark.parametrize(("which", "formats"), [("kws", ["--onnx", "--executorch"]), ("lraspp", ["--onnx"])])
def test_front_exports_with_every_output_and_benches(which, formats, seg_pair, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("executorch")
    import onnx

    if which == "kws":
        size, arch, factory, names = KWS_SIZE, KWS_ARCH, kws_net, ["output"]
        slim = _converted(_warmed(kws_net(), torch.randn(4, *size)), torch.randn(1, *size), arch=arch)
    else:
        size, arch, factory, names = SEG_SIZE, SEG_ARCH, lraspp, ["out"]
        slim = _converted(seg_pair[0], torch.randn(1, *size), arch=arch)
    manifest = _front(tmp_path / "front", slim, size, 0.0)
    assert json.loads(manifest.read_text())["dataset"]["input_size"] == list(size)
    rt = SlimmableRuntime.load(manifest, model=factory)
    x = torch.randn(2, *size)
    for p in rt.points:
        rt.switch(p)
        with torch.no_grad():
            assert all(
                torch.equal(a, b) for a, b in zip(_flat(rt(x)), _flat(rt.standalone(p)(x)), strict=True)
            )
    out = tmp_path / "exports"
    r = cli(
        "export",
        str(manifest),
        "--point",
        "p50",
        *formats,
        "--out",
        str(out),
        "--model",
        arch,
    )
    assert r.returncode == 0, r.stderr
    records = json.loads((out / "export.json").read_text())
    assert len(records) == len(formats) and all(rec["max_abs_diff"] <= 1e-4 for rec in records)
    assert [o.name for o in onnx.load(str(out / "p50.onnx")).graph.output] == names
    r = cli(
        "bench",
        str(manifest),
        "--backend",
        "torch",
        "--warmup",
        "1",
        "--runs",
        "3",
        "--model",
        arch,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "p50" in r.stdout
