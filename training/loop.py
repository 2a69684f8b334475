"""The shared training loop: one function that trains any strategy on any task and writes the front.

What differs between problems (data, default architecture, loss, forward, figures) comes from the
run's :class:`training.tasks.Task`; the loop is the same for all. Each step is a :meth:`training.trainer.Trainer.train_step` (the library a user's own loop calls)
between ``opt.zero_grad()`` and ``opt.step()``. SGD with Nesterov momentum and weight decay, a
per-step cosine or linear schedule with linear warm-up, optional label smoothing, bf16 autocast on
GPU, a checkpoint per epoch (bit-exact resume on CPU at the same thread count), progress
(:mod:`training.progress`) with the top-1 (a task's own figure) of the largest and smallest
sub-networks after each epoch, the same figures as JSON lines in ``OUT/train.log.jsonl``, DistributedDataParallel under
``torchrun``, and a refusal to train on a NaN/inf loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from pareco_runtime import ConversionError, build_model, make_slimmable
from pareco_runtime.manifest import MANIFEST_NAME
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.sources import is_converted, original_from_user
from pareco_runtime.untrusted import first_line

from . import distributed
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainingError
from .epoch_eval import describe, epoch_top1
from .front_builder import build_front, record_latency_table
from .init_weights import load_initial_state
from .progress import Reporter, format_duration
from .run_dir import LOG_NAME, check_run, prepare_out_dir
from .strategies import Independent, Slim, Strategy
from .tasks import Task, make_task
from .trainer import Trainer


def make_strategy(cfg: TrainConfig) -> Strategy:
    """The strategy object for ``cfg.algorithm``."""
    if cfg.algorithm == "independent":
        return Independent(cfg.seed, width=cfg.width, torchvision_widths=cfg.torchvision_widths)
    if cfg.algorithm == "slim":
        return Slim(
            cfg.seed,
            samples=cfg.samples,
            num_candidates=cfg.candidates,
            torchvision_widths=cfg.torchvision_widths,
        )
    from .pareco import make_bo_strategy  # BoTorch is heavy: imported only when asked for

    return make_bo_strategy(cfg)


def build_for_data(cfg: TrainConfig, num_classes: int, input_size: tuple[int, int, int]) -> SlimmableNet:
    """The slimmable model of ``cfg.arch`` sized for the data's classes and resolution, at ``cfg.init``'s
    weights when given.

    A converted architecture is built as the original module, given the initial weights (the keys a
    user's checkpoint has), then made slimmable; ``pkg.module:factory`` is imported because the user
    named it on the command line.
    """
    if is_converted(cfg.arch):
        try:
            original = original_from_user(cfg.arch, {"num_classes": num_classes})
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if cfg.init:
            load_initial_state(original, cfg.init, cfg.arch, num_classes)
        try:
            return make_slimmable(
                original,
                torch.zeros(1, *input_size),
                low=cfg.low,
                lows=cfg.group_lows(),
                pin=cfg.pin_patterns(),
                arch=cfg.arch,
                model_kwargs={"num_classes": num_classes},
            )
        except ConversionError as exc:
            # The library names its keyword arguments; the user typed flags.
            raise TrainingError(
                f"--arch {cfg.arch}: {exc.cli or str(exc).removeprefix('make_slimmable: ')}"
            ) from None
    kwargs: dict[str, Any] = {"num_classes": num_classes, "input_size": input_size[-1]}
    if cfg.arch.startswith("resnet"):
        # A whole factor stays an int so manifests of k x ResNet read as before.
        k = cfg.width_factor
        kwargs["width"] = int(k) if k == int(k) else k
    if cfg.arch.startswith("mobilenet") and cfg.divisor > 1:
        kwargs["divisor"] = cfg.divisor
    model = build_model(cfg.arch, **kwargs)
    if cfg.init:
        load_initial_state(model, cfg.init, cfg.arch, num_classes)
    return model


def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine or linear decay to zero."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
    return cfg.lr * (1 - frac)


def _restore(
    ckpt: dict[str, Any],
    path: Path,
    cfg: TrainConfig,
    model: SlimmableNet,
    opt: torch.optim.Optimizer,
    strategy: Strategy,
) -> tuple[int, float]:
    """Load a checkpoint into the run; (epoch to continue from, wall time so far). A checkpoint that
    does not fit (the data gained a class, a damaged RNG state or epoch) is a one-line TrainingError."""
    redo = "start afresh with --force, or restore what changed"
    epoch = int(ckpt["epoch"])
    if not 0 <= epoch <= cfg.epochs:
        raise TrainingError(
            f"{path}: epoch {epoch} is outside 0..{cfg.epochs} (--epochs); the checkpoint is damaged; {redo}"
        )
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainingError(
            f"{path}: does not fit this run's model ({first_line(exc).strip()}); the data or the "
            f"architecture changed since it was written (e.g. a class folder was added); {redo}"
        ) from None
    try:
        strategy.load_state_dict(ckpt["strategy"])
        _set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{path}: its strategy or RNG state is damaged ({first_line(exc)}); {redo}"
        ) from None
    return epoch, float(ckpt["wall_time_s"])


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@dataclasses.dataclass
class _Run:
    """What the epochs need: the settings, task, data, model, optimiser, trainer and steps per epoch."""

    cfg: TrainConfig
    task: Task
    data: Any
    model: SlimmableNet
    opt: torch.optim.Optimizer
    trainer: Trainer
    steps_per_epoch: int
    dist: distributed.Dist

    @property
    def strategy(self) -> Strategy:
        """The trainer's strategy."""
        return self.trainer.strategy

    @property
    def total(self) -> int:
        """Steps of the whole run."""
        return self.steps_per_epoch * self.cfg.epochs


class _Log:
    """The JSON lines of ``train.log.jsonl`` (None: this rank writes none), held open for the run."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` with the time now, as one line."""
        if self.file is not None:
            self.file.write(json.dumps({**record, "time": time.time()}) + "\n")
            self.file.flush()

    def close(self) -> None:
        """Close the file."""
        if self.file is not None:
            self.file.close()


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    cache_dir: str | None = None,
    log_every: int = 20,
    show_progress: bool = True,
) -> Path:
    """Train ``cfg`` into ``out`` and write ``model.safetensors`` + ``model.front.json``; returns the manifest path.

    ``resume`` continues from the last epoch checkpoint bit for bit (CPU, same ``cfg.threads``);
    ``force`` discards a previous run in ``out``. Nothing is written before the data, the architecture
    and the settings have been checked, so a start refused for them leaves nothing that blocks the
    corrected command. With ``show_progress``, progress goes to stderr: a bar on a terminal, a line
    every ``log_every`` steps and per epoch elsewhere.
    Under ``torchrun`` every rank trains a shard and rank 0 writes.
    """
    cfg.validate()
    if log_every < 1:
        raise TrainingError(f"--log-every {log_every}: must be at least 1 (steps between log lines)")
    out = Path(out)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dist = distributed.setup(device)
    try:
        if dist.is_main:
            check_run(out, cfg, resume, force)  # a refusal before minutes of loading data
        run = _build(cfg, dist, cache_dir)
        if dist.is_main:
            prepare_out_dir(out, cfg, resume, force)
        dist.barrier()
        wall = _train_epochs(run, out, resume, log_every, show_progress)
        checksum = float(sum(p.double().sum().item() for p in run.model.parameters()))
        if not dist.same_on_all_ranks(checksum):
            raise TrainingError(
                "ranks finished with different weights; report this as a bug with the command used"
            )
        manifest = out / MANIFEST_NAME
        if dist.is_main:
            manifest = _finish(run, out, wall, show_progress)
        dist.barrier()
        return manifest
    finally:
        distributed.teardown()
        torch.set_num_threads(threads)


def _build(cfg: TrainConfig, dist: distributed.Dist, cache_dir: str | None) -> _Run:
    """Load the data and build the model, strategy and optimiser: every check of ``--data``, ``--arch``
    and the settings that needs them, all before the run writes a file."""
    task = make_task(cfg.task)
    torch.manual_seed(cfg.seed)
    data = task.load_data(cfg, cache_dir, dist.device)
    arch = task.arch(cfg)
    built = build_for_data(
        dataclasses.replace(cfg, arch=arch), len(data.info.class_names), data.info.input_size
    )
    task.check_model(built, data, cfg.arch)
    model = built.to(dist.device)
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    strategy = make_strategy(cfg)
    strategy.attach_data(data)
    spe = data.steps_per_epoch(cfg.batch_size, dist.world_size)
    if spe < 1:
        raise TrainingError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({data.info.num_train} images); lower it"
        )
    trainer = Trainer(
        net,
        strategy,
        task.loss(cfg),
        total_steps=spe * cfg.epochs,
        forward=task.forward,
        distill=task.distill(),
        distill_warmup=cfg.distill_warmup,
        probe_loss=task.probe_loss(),
    )
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    return _Run(cfg, task, data, model, opt, trainer, spe, dist)


def _train_epochs(run: _Run, out: Path, resume: bool, log_every: int, show_progress: bool) -> float:
    """Train the epochs not yet done (all, or those after ``out``'s checkpoint with ``resume``), with a
    checkpoint after each; the run's training wall time in seconds."""
    cfg, dist = run.cfg, run.dist
    start_epoch, wall = 0, 0.0
    ckpt_path = out / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        start_epoch, wall = _restore(
            load_checkpoint(ckpt_path), ckpt_path, cfg, run.model, run.opt, run.strategy
        )
    log = _Log(out / LOG_NAME if dist.is_main else None)
    progress = Reporter(
        run.total, start_epoch * run.steps_per_epoch, every=log_every, enabled=dist.is_main and show_progress
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.perf_counter()
            loss = _train_epoch(run, epoch, ckpt_path, log, progress, log_every)
            epoch_time = time.perf_counter() - t_epoch
            wall += epoch_time
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "epoch_time_s": epoch_time,
                "steps": run.steps_per_epoch,
            }
            record.update(run.strategy.record())
            check = _epoch_check(run) if dist.is_main and cfg.epoch_eval else None
            if check is not None:
                record["epoch_eval"] = check
            log.write(record)
            figures = None if check is None else describe(check, run.task.epoch_key, run.task.epoch_label)
            progress.say(_epoch_line(epoch, cfg.epochs, epoch_time, loss, figures, progress.eta()))
            if dist.is_main:
                save_checkpoint(
                    ckpt_path,
                    {
                        "model": run.model.state_dict(),
                        "optimizer": run.opt.state_dict(),
                        "strategy": run.strategy.state_dict(),
                        "rng": _rng_state(),
                        "epoch": epoch + 1,
                        "wall_time_s": wall,
                    },
                )
            dist.barrier()
    finally:
        progress.close()
        log.close()
    return wall


def _train_epoch(
    run: _Run,
    epoch: int,
    ckpt_path: Path,
    log: _Log,
    progress: Reporter,
    log_every: int,
) -> float:
    """Train one epoch, showing and logging its steps; the mean loss of the first config (the largest
    where there is a teacher) over its steps."""
    cfg, model, dist = run.cfg, run.model, run.dist
    spe = run.steps_per_epoch
    t_epoch = time.perf_counter()
    seen, loss_sum = 0, 0.0
    batches = run.data.train_batches(
        cfg.batch_size, epoch, cfg.seed, rank=dist.rank, world_size=dist.world_size
    )
    for i, (x, y) in enumerate(batches):
        step = epoch * spe + i
        lr = lr_at(cfg, step, run.total, spe)
        for g in run.opt.param_groups:
            g["lr"] = lr
        model.train()
        run.opt.zero_grad(set_to_none=True)
        losses = [v.item() for v in run.trainer.train_step((x, y), step=step).losses]
        run.opt.step()
        _check_finite(losses, epoch, step, cfg, ckpt_path)
        seen += x.shape[0] * dist.world_size
        loss_sum += losses[0]
        record = {
            "epoch": epoch + 1,
            "step": step + 1,
            "loss": losses[0],
            "lr": lr,
            "img_per_s": seen / max(time.perf_counter() - t_epoch, 1e-9),
            "strategy": run.strategy.progress(),
        }
        info = (
            f"step {step + 1}/{run.total} loss {losses[0]:.3f} lr {lr:.4f} {record['img_per_s']:.0f} img/s "
            f"{record['strategy']}"
        )
        progress.update(step + 1, f"epoch {epoch + 1}/{cfg.epochs}", info.rstrip())
        if (step + 1) % log_every == 0:
            log.write(record)
    return loss_sum / spe


def _check_finite(losses: list[float], epoch: int, step: int, cfg: TrainConfig, ckpt_path: Path) -> None:
    """TrainingError when a loss is NaN or infinite: the run diverged."""
    bad = next((v for v in losses if not math.isfinite(v)), None)
    if bad is None:
        return
    kept = (
        f"the last good checkpoint (epoch {epoch}) is kept in {ckpt_path}"
        if epoch
        else "no checkpoint was written yet"
    )
    raise TrainingError(
        f"loss became {bad} at epoch {epoch + 1} step {step}: training diverged; "
        f"{kept}; lower --lr (now {cfg.lr}) or add --warmup-epochs and "
        "start again with --force"
    )


def _epoch_check(run: _Run) -> dict[str, Any]:
    """The top-1 (the task's figure) of the strategy's watched sub-networks on ``--epoch-eval``
    held-out images (:func:`training.epoch_eval.epoch_top1`), with the seconds it took."""
    t0 = time.perf_counter()
    cfg = run.cfg
    result = epoch_top1(
        run.model,
        run.strategy.watched_configs(run.model),
        run.data,
        cfg.epoch_eval,
        cfg.calib_batches,
        cfg.calib_batch_size,
        cfg.seed,
        figure=run.task.epoch_figure(run.data),
        key=run.task.epoch_key,
    )
    return {**result, "time_s": round(time.perf_counter() - t0, 3)}


def _epoch_line(epoch: int, epochs: int, seconds: float, loss: float, figures: str | None, eta: str) -> str:
    """The progress line at the end of an epoch, with the after-epoch check's ``figures`` where made."""
    shown = f", {figures}" if figures is not None else ""
    return (
        f"epoch {epoch + 1}/{epochs} done in {format_duration(seconds)}: mean loss {loss:.3f}{shown}; {eta}"
    )


def _finish(run: _Run, out: Path, wall: float, show_progress: bool) -> Path:
    """Build the front (progress on stderr with ``show_progress``) and write the weight file and manifest."""
    cfg, model, data, task = run.cfg, run.model, run.data, run.task
    t0 = time.perf_counter()
    progress = Reporter(0, enabled=show_progress)
    try:
        progress.say(f"front: choosing candidate configs ({cfg.algorithm})")
        configs = run.trainer.candidates()
        chosen_on = "held-out training images" if data.info.num_selection else f"{data.info.val_split} images"

        def done(k: int, n: int) -> None:
            progress.update(
                k, "front:", f"{k}/{n} candidates calibrated and evaluated on {chosen_on}", total=n
            )

        evaluate, selection_evaluate = task.evaluators(data)

        def chosen(n: int) -> None:
            if data.info.num_selection:
                progress.say(f"front: {n} points chosen; evaluating them on {data.info.val_split}")

        lat = run.strategy.latency_cost()
        strategy_record = run.strategy.record()
        built = build_front(
            out,
            model,
            configs,
            lambda: data.calib_batches(cfg.calib_batch_size, cfg.calib_batches, cfg.seed),
            evaluate,
            metric=task.metric,
            selection_evaluate=selection_evaluate,
            training={
                "algorithm": cfg.algorithm,
                "epochs": cfg.epochs,
                "seed": cfg.seed,
                "wall_time_s": round(wall, 3),
                "history_size": strategy_record.get("history_size"),
                "extra": {
                    **strategy_record,
                    **task.record(data),
                    "config": dataclasses.asdict(cfg),
                    "world_size": run.dist.world_size,
                },
            },
            dataset=task.dataset(data, cfg),
            cost=None if lat is None else lat.fraction,
            on_done=done,
            on_chosen=chosen,
            started=t0,
        )
    finally:
        progress.close()
    manifest = built.manifest
    if lat is not None:
        record_latency_table(manifest, lat.lut)
    for problem in task.front_warnings(built.chosen, data):
        warnings.warn(f"{manifest}: {problem}", stacklevel=2)
    return manifest
