"""SlimmableNet.config: the one owner of the active config (widths, BN statistics, mode) and its restore."""

from __future__ import annotations

import json

import pytest
import torch

from pareco_runtime import SlimmableRuntime, build_model, slice_model
from pareco_runtime.models.base import BNStatsError
from pareco_runtime.ops import SlimBatchNorm2d
from pareco_runtime.untrusted import FormatError, sha256_file
from pareco_runtime.weights_file import load_weights, save_weights
from training.batch_loss import measure_losses
from training.calibrate import calibrate_bn, evaluate


@pytest.fixture
def net():
    """A resnet20 at a non-default config with non-trivial running buffers, in train mode."""
    torch.manual_seed(0)
    m = build_model("resnet20", num_classes=4, input_size=8)
    for _, bn in m.bn_layers:
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.num_batches_tracked.fill_(7)
    m.set_widths(m.space.uniform(0.7))
    return m.train()


def snapshot(m) -> dict:
    """Everything config() promises to restore, by value (state) and by identity (lists, statistics)."""
    return {
        "state": {k: v.clone() for k, v in m.state_dict().items()},
        "ptrs": [b.data_ptr() for b in m.buffers()],
        "alpha": m.alpha,
        "ch": list(m.ctx.ch),
        "ch_list": m.ctx.ch,
        "bn_stats": m.ctx.bn_stats,
        "modes": [mod.training for mod in m.modules()],
        "bn_attrs": [(bn.momentum, bn.track_running_stats) for _, bn in m.bn_layers],
    }


def assert_unchanged(m, before: dict) -> None:
    after = snapshot(m)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"]), (
        "weights or BN buffers"
    )
    assert after["ptrs"] == before["ptrs"], "buffers were replaced instead of restored in place"
    assert after["alpha"] is before["alpha"] and after["ch"] == before["ch"]
    assert after["ch_list"] is before["ch_list"], "the context's slot list must stay the same object"
    assert after["bn_stats"] is before["bn_stats"]
    assert after["modes"] == before["modes"] and after["bn_attrs"] == before["bn_attrs"]


def stats_at(m, alpha, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    v = m.channels(alpha) + m.ctx.ch[m.space.dims :]
    return [
        (torch.randn(v[bn.out_slot], generator=g), torch.rand(v[bn.out_slot], generator=g) + 0.5)
        for _, bn in m.bn_layers
    ]


def test_bn_layers_are_the_slimmable_bns_in_module_order(net):
    names = [n for n, mod in net.named_modules() if isinstance(mod, SlimBatchNorm2d)]
    assert [n for n, _ in net.bn_layers] == names == net.bn_names
    assert [bn.bn_index for _, bn in net.bn_layers] == list(range(len(names)))


def test_config_activates_then_restores_after_normal_exit(net):
    before = snapshot(net)
    alpha = net.space.uniform(0.4)
    stats = stats_at(net, alpha)
    with net.config(alpha, stats):
        assert net.alpha == alpha and net.channels() == net.channels(alpha)
        assert net.ctx.bn_stats is stats
        assert not any(mod.training for mod in net.modules())
        sub = slice_model(net)
        x = torch.randn(2, 3, 8, 8)
        assert torch.allclose(net(x), sub(x), atol=1e-6), "eval mode uses the installed statistics"
    assert_unchanged(net, before)


def test_config_restores_after_an_exception_in_train_mode(net):
    net.eval()
    net.layer1.train()  # a mixed mode comes back module by module
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), net.config(net.space.uniform(0.5), train=True):
        assert all(mod.training for mod in net.modules())
        net(torch.randn(4, 3, 8, 8) * 3 + 1)
        _, bn = net.bn_layers[0]
        assert not torch.equal(bn.running_mean, before["state"]["bn1.running_mean"]), "train mode updates BN"
        raise RuntimeError("boom")
    assert_unchanged(net, before)


def test_nested_configs_restore_level_by_level(net):
    before = snapshot(net)
    a1, a2 = net.space.uniform(0.5), net.space.uniform(0.9)
    s1 = stats_at(net, a1)
    with net.config(a1, s1):
        with net.config(a2, train=True):
            assert net.alpha == a2 and net.ctx.bn_stats is None and net.training
            net(torch.randn(4, 3, 8, 8))
        assert net.alpha == a1 and net.ctx.bn_stats is s1 and not net.training
        with net.config():
            assert net.alpha == a1 and net.ctx.bn_stats is None, "no statistics given: the running buffers"
    assert_unchanged(net, before)


def test_statistics_are_not_aliased(net):
    alpha = net.space.uniform(0.5)
    given = stats_at(net, alpha)
    given_copy = [(m.clone(), v.clone()) for m, v in given]
    with net.config(alpha, given, train=True):
        net(torch.randn(4, 3, 8, 8) * 2)
        read = net.current_bn_stats()
    assert all(torch.equal(m, mc) and torch.equal(v, vc) for (m, v), (mc, vc) in zip(given, given_copy))
    buffers = [(bn.running_mean.clone(), bn.running_var.clone()) for _, bn in net.bn_layers]
    for m, v in read:
        m.add_(1.0)
        v.mul_(2.0)
    assert all(
        torch.equal(bn.running_mean, m) and torch.equal(bn.running_var, v)
        for (_, bn), (m, v) in zip(net.bn_layers, buffers)
    ), "current_bn_stats returns copies"


def test_current_bn_stats_are_what_eval_mode_uses(net):
    alpha = net.space.uniform(0.5)
    given = stats_at(net, alpha)
    with net.config(alpha):
        ch = net.ctx.ch
        assert all(
            torch.equal(m, bn.running_mean[: ch[bn.out_slot]])
            for (_, bn), (m, _) in zip(net.bn_layers, net.current_bn_stats())
        )
    with net.config(alpha, given):
        assert all(
            torch.equal(m, gm) and torch.equal(v, gv)
            for (m, v), (gm, gv) in zip(net.current_bn_stats(), given)
        )


def test_misfit_statistics_name_the_tensor_and_change_nothing(net):
    before = snapshot(net)
    alpha = net.space.uniform(0.5)
    stats = stats_at(net, alpha)
    name = net.bn_names[2]
    stats[2] = (stats[2][0], stats[2][1][:-1])
    with pytest.raises(BNStatsError) as info, net.config(alpha, stats):
        pytest.fail("the body must not run")
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and msg.startswith("bn_stats: ") and "; " in msg
    assert f"{name}.running_var has shape" in msg and info.value.what in msg
    with pytest.raises(BNStatsError, match=r"pairs for \d+ BN layers"):
        net.check_bn_stats(stats[:-1], alpha)
    with pytest.raises(BNStatsError, match="expected"):
        slice_model(net, net.space.uniform(0.9), bn_stats=stats_at(net, alpha))
    assert_unchanged(net, before)


@pytest.mark.parametrize("train", [True, False])
def test_slice_calibrate_evaluate_and_measure_leave_the_model_as_found(net, train):
    net.train(train)
    alpha = net.space.uniform(0.5)
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    before = snapshot(net)
    slice_model(net, alpha)
    slice_model(net, alpha, bn_stats=stats_at(net, alpha))
    assert_unchanged(net, before)
    stats = calibrate_bn(net, alpha, batches)
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="no batches"):
        calibrate_bn(net, alpha, [])
    assert_unchanged(net, before)
    evaluate(net, alpha, stats, [(batches[0], torch.tensor([0, 1, 2, 3]))])
    evaluate(net, alpha, None, [(batches[0], torch.tensor([0, 1, 2, 3]))])
    assert_unchanged(net, before)
    measure_losses(net, [alpha, net.space.uniform(1.0)], (batches[0], torch.tensor([0, 1, 2, 3])))
    assert_unchanged(net, before)


def test_calibrated_statistics_do_not_depend_on_the_buffers_before(net):
    alpha = net.space.uniform(0.5)
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    first = calibrate_bn(net, alpha, batches)
    for _, bn in net.bn_layers:
        bn.running_mean.fill_(5.0)
    second = calibrate_bn(net, alpha, batches)
    assert all(torch.equal(a, b) for pa, pb in zip(first, second) for a, b in zip(pa, pb))


def test_runtime_names_the_misfit_tensor_of_a_point(front_copy):
    weights = front_copy.parent / "model.safetensors"
    wf = load_weights(weights)
    pid = json.loads(front_copy.read_text())["points"][0]["id"]
    name = build_model("resnet20", num_classes=4, input_size=16).bn_names[1]
    mean, var = wf.bn_stats[pid][name]
    wf.bn_stats[pid][name] = (mean[:-1], var)
    save_weights(weights, wf.state, wf.bn_stats, wf.metadata)
    manifest = json.loads(front_copy.read_text())
    manifest["weights"]["sha256"] = sha256_file(weights)
    front_copy.write_text(json.dumps(manifest))
    with pytest.raises(FormatError) as info:
        SlimmableRuntime.load(front_copy)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(weights))
    assert f"point '{pid}': {name}.running_mean has shape" in msg and msg.endswith(
        "re-train or re-export the model"
    )


def test_standalone_leaves_the_runtime_point_active(tiny_front):
    rt = SlimmableRuntime.load(tiny_front)
    active, stats, ch = rt.active, rt.model.ctx.bn_stats, list(rt.model.ctx.ch)
    other = min(rt.points, key=lambda p: p.mflops)
    rt.standalone(other)
    assert rt.active == active and rt.model.ctx.bn_stats is stats and rt.model.ctx.ch == ch
    assert not rt.model.training
