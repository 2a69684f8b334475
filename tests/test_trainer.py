"""The trainers as a library: Trainer with the user's loss, outputs, distillation, accumulation, DDP, resume."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from pareco_runtime import build_model
from training import Independent, PareCO, Slim, Trainer
from training.batch_loss import head, soft_target_distill


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes=4, input_size=16)


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _dict_forward(net, batch):
    return {"logits": net(batch["image"]), "aux": net(batch["image"]).mean()}


def _dict_loss(out, batch):
    return F.cross_entropy(out["logits"], batch["label"]) + 0.0 * out["aux"]


def test_a_step_is_the_mean_of_each_configs_loss_with_distillation_from_the_largest() -> None:
    model, ref = _model(), _model()
    x, y = _batch()
    result = Trainer(model, Slim(seed=0), total_steps=10, distill_warmup=0).train_step((x, y))
    assert len(result.configs) == 4 and result.configs[0] == model.space.uniform(1.0)
    teacher = None
    for alpha in result.configs:  # the same step written out by hand
        ref.set_widths(alpha)
        out = ref(x)
        loss = F.cross_entropy(out, y) if teacher is None else soft_target_distill(out, teacher)
        (loss / 4).backward()
        teacher = out.detach() if teacher is None else teacher
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_grads(model), _grads(ref)))
    assert all(v.requires_grad is False and v.dim() == 0 for v in result.losses)


def test_dict_batches_and_outputs_take_a_custom_loss_and_distillation() -> None:
    model = _model()
    x, y = _batch()
    batch = {"image": x, "label": y}
    seen = []

    def distill(student, teacher):
        seen.append(teacher["logits"].requires_grad)
        return soft_target_distill(student["logits"], teacher["logits"])

    trainer = Trainer(model, Slim(seed=0), _dict_loss, total_steps=4, forward=_dict_forward, distill=distill)
    trainer.train_step(batch)  # step 0: the ramp's weight is 0, nothing distils
    trainer.train_step(batch)
    assert seen == [False, False, False], "three students matched the detached teacher at step 1"
    with pytest.raises(ValueError, match=r"model returns a dict; pass Trainer\(distill=fn"):
        Trainer(
            model, Slim(seed=0), _dict_loss, total_steps=4, forward=_dict_forward, distill_warmup=0
        ).train_step(batch)
    off = Trainer(model, Slim(seed=0), _dict_loss, total_steps=4, forward=_dict_forward, distill=False)
    assert off.distill_weight(3) == 0.0 and len(off.train_step(batch).losses) == 4


def test_tuple_outputs_and_a_custom_input_extraction() -> None:
    model = _model()
    x, y = _batch()

    def forward(net, batch):
        logits = net(batch[1]["pixels"])
        return logits, logits.argmax(1)

    trainer = Trainer(
        model,
        Slim(seed=0),
        lambda out, b: F.cross_entropy(out[0], b[0]),
        total_steps=2,
        forward=forward,
        distill=lambda s, t: soft_target_distill(s[0], t[0]),
        distill_warmup=0,
    )
    assert torch.isfinite(torch.stack(trainer.train_step((y, {"pixels": x})).losses)).all()


def test_gradient_accumulation_over_half_batches_matches_the_full_batch() -> None:
    # BN on running statistics (eval mode): then each sample's loss is independent of the others'.
    full, acc = _model().eval(), _model().eval()
    x, y = _batch(16)
    Trainer(full, Slim(seed=0, samples=0), total_steps=1, distill_warmup=0).train_step((x, y))
    trainer = Trainer(acc, Slim(seed=0, samples=0), total_steps=2, distill_warmup=0)
    for part in (slice(0, 8), slice(8, 16)):
        trainer.train_step((x[part], y[part]), backward=lambda loss: (loss / 2).backward(), step=0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_grads(full), _grads(acc)))


def _run(strategy_factory, steps: range, state: dict | None = None) -> dict:
    """Train ``steps`` of a fresh model + AdamW + trainer (from ``state`` when given); the new state."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(model, strategy_factory(), total_steps=6)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        trainer.load_state_dict(state["trainer"])
    for i in steps:
        opt.zero_grad()
        model.train()
        trainer.train_step(_batch(seed=i))
        opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "trainer": trainer.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory",
    [
        lambda: Slim(seed=3),
        lambda: PareCO(seed=3, samples=2, history_size=9, probe_batch=4, warmup_configs=12),
    ],
    ids=["slim", "pareco"],
)
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(factory) -> None:
    whole = _run(factory, range(6))
    resumed = _run(factory, range(3, 6), _run(factory, range(3)))
    assert resumed["trainer"]["step"] == 6
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])


def test_paretos_bo_measures_configs_with_the_users_loss() -> None:
    model = _model()

    def macs_loss(out, batch):  # a loss by which the smallest config is best
        return out.sum() * 0 + model.macs(model.alpha) / 1e6

    strategy = PareCO(seed=0, samples=2, history_size=9, probe_batch=4, warmup_configs=9)
    trainer = Trainer(model, strategy, macs_loss, total_steps=6)
    trainer.train_step(_batch())
    measured = strategy.losses[: strategy.warmup]
    assert measured == pytest.approx([model.macs(a) / 1e6 for a in strategy.history[: strategy.warmup]])
    assert measured == sorted(measured), "H's warm-up widths rise in MACs, so in this loss"


def test_ddp_runs_the_wrapper_and_trains_as_the_plain_model(tmp_path) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        plain, wrapped = _model(), _model()
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped)
        calls = []
        forward = lambda net, b: calls.append(type(net).__name__) or net(b[0])  # noqa: E731
        Trainer(plain, Slim(seed=0), total_steps=2).train_step(_batch())
        Trainer(ddp, Slim(seed=0), total_steps=2, forward=forward).train_step(_batch())
        assert calls == ["DistributedDataParallel"] * 4
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_grads(plain), _grads(wrapped)))
    finally:
        torch.distributed.destroy_process_group()


def test_independent_trains_its_one_config_without_a_teacher() -> None:
    model = _model()
    result = Trainer(model, Independent(seed=0, width=0.5), total_steps=2).train_step(_batch())
    assert result.configs == [model.space.uniform(0.5)]


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"not a SlimmableNet; .*make_slimmable"):
        Trainer(torch.nn.Linear(2, 2), Slim(seed=0), total_steps=1)
    with pytest.raises(TypeError, match="pass cfg or the options"):
        from training.config import TrainConfig

        PareCO(TrainConfig(algorithm="pareco"), samples=3)


def test_head_slices_every_tensor_of_a_batch() -> None:
    x, y = _batch()
    got = head({"x": x, "pair": (y, 3), "scale": torch.tensor(2.0)}, 5)
    assert got["x"].shape[0] == 5 and got["pair"][0].shape[0] == 5 and got["pair"][1] == 3
    assert got["scale"].item() == 2.0
