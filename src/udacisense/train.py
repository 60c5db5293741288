"""Training: ``fit()`` for any classifier, ``fine_tune()`` (optionally distilled) that every compression stage calls,
and ``train_run()`` that owns a whole run folder.

``fit`` is deterministic for a given seed on CPU and resumable: ``last.pt`` holds the model,
optimizer, scheduler and every random-number state, so a run resumed after epoch k ends
bit-for-bit where the uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from udacisense import distributed, tracking
from udacisense.checkpoint import load_checkpoint, load_model, save_checkpoint, write_checkpoint_payload
from udacisense.config import EXECUTION_FIELDS, DistillConfig, RunConfig, TrackingConfig, TrainConfig, validate_config
from udacisense.data import ImageDataset, augmentation, get_dataset
from udacisense.distillation import make_distillation_loss
from udacisense.errors import TrainingFailed, UdaciSenseError
from udacisense.evaluate import evaluate
from udacisense.health import HINT, judge_training
from udacisense.io import write_json
from udacisense.lr_range import lr_range_test
from udacisense.models import check_fits, create_model
from udacisense.runs import FILE_ONLY, get_logger, prepare_run_dir, run_dir_lock, save_config

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits, images, labels) -> scalar loss; images let a distillation loss query a teacher."""


@dataclass
class EpochResult:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float | None
    val_top1: float | None
    lr: float
    seconds: float  # the training steps alone (images_per_second)
    images_per_second: float
    wall_seconds: float = 0.0  # the whole epoch, its validation included: what one more epoch costs (0: not recorded)


def resolve_device(choice: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a clear error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UdaciSenseError("device 'cuda' was requested but no CUDA GPU is visible; use --device cpu")
    return torch.device("cuda" if choice in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW at ``lr``; no weight decay on BatchNorm and bias parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """An :class:`AveragedModel` update whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` (timm's warm-up).

    Without the ramp, a decay of 0.9995 keeps the random initialization for thousands of steps: the average of a
    short run is still at chance and fails its training check. ``n`` is the model's own update count, so a
    resumed run continues the ramp where it stopped.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # BatchNorm's step counters: an average means nothing, keep the latest
            torch._foreach_copy_(averaged, current)
            return
        updates = int(num_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + updates) / (10 + updates)))

    return update


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, lr: float):
    """Per-step cosine decay or one-cycle (warm-up to ``lr``, then cosine annealing)."""
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=max(config.warmup_fraction, 1e-3)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))


@dataclass
class _Training:
    """What one :func:`fit` carries from epoch to epoch: the model (as saved, and as each step calls it), where and how it
    trains, its optimizer state and what it measured so far."""

    model: nn.Module
    step_model: nn.Module  # ``model`` DDP-wrapped and/or compiled; it shares ``model``'s parameters
    restore_batchnorm: Callable[[], None]  # undoes SyncBatchNorm (a no-op without it)
    dataset: ImageDataset
    config: TrainConfig
    checkpoint_dir: Path
    model_spec: dict[str, Any]
    device: torch.device
    main_rank: bool
    memory_format: torch.memory_format
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    data_generator: torch.Generator
    loss_function: LossFunction
    lr: float  # the peak learning rate
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    history: list[EpochResult] = field(default_factory=list)
    best_val: float = -1.0
    start_epoch: int = 1

    @property
    def evaluated(self) -> nn.Module:
        """What is validated and saved as best: the moving average of the weights when one is kept, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self):
        """bf16 autocast on CUDA with ``config.amp``; nothing otherwise."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and self.config.amp else nullcontext()


def fit(
    model: nn.Module,
    dataset: ImageDataset,
    config: TrainConfig,
    checkpoint_dir: Path,
    model_spec: dict[str, Any],
    *,
    resume: bool = False,
    loss_function: LossFunction | None = None,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_step_end: Callable[[], None] | None = None,
    logger: logging.Logger | None = None,
    augment: Sequence[str] = (),
) -> list[EpochResult]:
    """Train ``model`` on ``dataset.train``, validating each epoch; writes ``last.pt`` and ``best.pt``.

    ``loss_function`` replaces label-smoothed cross-entropy (distillation plugs in here).
    ``on_epoch_start(epoch)`` runs before each epoch, resumed ones included (gradual pruning
    raises sparsity here); ``on_step_end`` after each optimizer step (pruning re-applies its
    masks here); ``on_epoch_end`` after the epoch's checkpoints are on disk.

    Training cannot fail silently: a non-finite loss stops it at once, and a model that ends at chance
    (see :mod:`udacisense.health`) raises :class:`TrainingFailed` after its verdict is written into
    ``best.pt`` and ``last.pt``. With ``config.ema_decay`` the moving average of the weights is what is
    validated, saved and left in ``model``.
    """
    logger = logger or logging.getLogger("udacisense")
    training = _start(model, dataset, config, checkpoint_dir, model_spec, resume, loss_function, augment, logger)
    for epoch in range(training.start_epoch, config.epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        result = _validate(training, _train_epoch(training, epoch, on_step_end))
        training.history.append(result)
        _sync_weights(training)
        _save_checkpoints(training, result)
        _log_epoch(result, config.epochs, logger)
        if on_epoch_end is not None:
            on_epoch_end(result)
    _finish(training)
    _judge(training.history, dataset, loss_function is None, checkpoint_dir, model)
    return training.history


def fine_tune(
    model: nn.Module,
    dataset: ImageDataset,
    config: TrainConfig,
    folder: Path,
    model_spec: dict[str, Any],
    *,
    teacher: nn.Module | None = None,
    distillation: DistillConfig = DistillConfig(),
    on_epoch_start: Callable[[int], None] | None = None,
    on_step_end: Callable[[], None] | None = None,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    logger: logging.Logger | None = None,
    augment: Sequence[str] = (),
    resume: bool = False,
) -> list[EpochResult]:
    """Train ``model`` after a compression step, in ``folder``: the one fine-tune every stage calls (a distilled student
    too). Writes ``last.pt`` and ``best.pt`` there, and with ``resume`` continues from its ``last.pt``.

    With a ``teacher`` (a copy of the model before the stage, the baseline, or any classifier of the same classes;
    frozen here), the loss is Hinton's distillation loss at ``distillation``'s temperature and alpha; without one,
    label-smoothed cross-entropy. The hooks are :func:`fit`'s: ``on_epoch_start(epoch)`` before each epoch (gradual
    pruning raises sparsity there), ``on_step_end()`` after each optimizer step (pruning re-zeroes its weights there),
    ``on_epoch_end(result)`` once the epoch's checkpoints are written.
    """
    loss_function = None
    if teacher is not None:
        if distillation.cache_teacher_logits and augment:
            raise UdaciSenseError(
                "cache_teacher_logits needs augmentation off (each augmented image is new); set data augment: none (--augment none) or turn caching off"
            )
        loss_function = make_distillation_loss(teacher, distillation, config.label_smoothing, resolve_device(config.device))
    return fit(model, dataset, config, folder, model_spec, resume=resume, loss_function=loss_function, on_epoch_start=on_epoch_start,
               on_step_end=on_step_end, on_epoch_end=on_epoch_end, logger=logger, augment=augment)


def _start(model: nn.Module, dataset: ImageDataset, config: TrainConfig, checkpoint_dir: Path, model_spec: dict[str, Any], resume: bool,
           loss_function: LossFunction | None, augment: Sequence[str], logger: logging.Logger) -> _Training:
    """Everything before the first epoch: the model placed (:func:`_place`), the seeded order of the training batches,
    the loss, the peak learning rate, optimizer, scheduler and moving average; with ``resume``, continued from ``last.pt``."""
    device, main_rank, memory_format, step_model, restore_batchnorm = _place(model, config, dataset.input_shape, logger)
    seed_everything(config.seed)
    data_generator = torch.Generator().manual_seed(config.seed)
    batches = dataset.loader("train", config.batch_size, shuffle=True, augment=augment, generator=data_generator)
    loss_function = loss_function or (lambda logits, _images, labels: F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing))
    last_path = checkpoint_dir / "last.pt"
    state = load_checkpoint(last_path) if resume and last_path.exists() else None
    lr = _peak_lr(model, dataset, config, augment, loss_function, device, checkpoint_dir, state, logger)
    optimizer = make_optimizer(model, config, lr)
    training = _Training(
        model=model, step_model=step_model, restore_batchnorm=restore_batchnorm, dataset=dataset, config=config,
        checkpoint_dir=checkpoint_dir, model_spec=model_spec, device=device, main_rank=main_rank, memory_format=memory_format,
        batches=batches, data_generator=data_generator, loss_function=loss_function, lr=lr, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config, len(batches), lr),
        ema=AveragedModel(model, multi_avg_fn=ema_with_warmup(config.ema_decay), use_buffers=True) if config.ema_decay else None,
    )
    if state is not None:
        _resume(training, state)
        logger.info(f"resuming from {last_path} after epoch {state['epoch']}")
    return training


def _place(model: nn.Module, config: TrainConfig, input_shape: tuple[int, ...], logger: logging.Logger
           ) -> tuple[torch.device, bool, torch.memory_format, nn.Module, Callable[[], None]]:
    """Put ``model`` where it trains: the CPU threads, the device (under torchrun, this rank's GPU), the memory format
    and SyncBatchNorm when asked. Returns the device, whether this is the main rank, the memory format, the module each
    step calls (DDP-wrapped under torchrun, compiled with ``config.compile``) and the function that undoes SyncBatchNorm.

    The step module shares ``model``'s parameters: checkpoints and the moving average keep using ``model`` itself.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    ranks = distributed.init(device)
    use_cuda = device.type == "cuda"
    if use_cuda and ranks.size > 1:
        device = torch.device("cuda", ranks.local_rank)
    model.to(device=device)
    memory_format = _training_memory_format(model, config, input_shape, device, logger)
    model.to(memory_format=memory_format)
    restore_batchnorm = distributed.sync_batchnorm(model, device) if config.sync_batchnorm else (lambda: None)
    step_model = distributed.wrap(model, device)
    if config.compile:  # dynamic=False: the last, smaller batch gets its own graph instead of a shape-generic (slower) one
        step_model = torch.compile(step_model, mode="reduce-overhead" if use_cuda else None, dynamic=False)
    return device, ranks.main, memory_format, step_model, restore_batchnorm


def _resume(training: _Training, state: dict[str, Any]) -> None:
    """Continue from a ``last.pt`` payload: the weights, optimizer, scheduler and moving average, the random-number
    states of the batch order and of torch, the history and the best score so far."""
    training.model.load_state_dict(state["state_dict"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    if training.ema is not None:
        training.ema.load_state_dict(state["ema"])
    training.data_generator.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
    training.history = [EpochResult(**row) for row in state["history"]]
    training.best_val = state["best_val_top1"]
    training.start_epoch = state["epoch"] + 1


def _train_epoch(training: _Training, epoch: int, on_step_end: Callable[[], None] | None) -> EpochResult:
    """One pass over the training batches, every rank's numbers summed; validation is not filled in yet."""
    training.model.train()
    started = time.perf_counter()
    loss_sum, correct, seen, steps = 0.0, 0, 0, 0
    bar = tqdm(training.batches, desc=f"epoch {epoch}/{training.config.epochs}", leave=False, disable=None)
    for images, labels in bar:
        value, logits, labels = _train_step(training, images, labels, epoch, steps + 1)
        if on_step_end is not None:
            on_step_end()
        _update_ema(training)
        loss_sum += value * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += labels.numel()
        steps += 1
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    loss_sum, correct, seen = distributed.all_sum(loss_sum, correct, seen)  # over every rank's part of the epoch
    seconds = time.perf_counter() - started
    return EpochResult(epoch=epoch, train_loss=loss_sum / seen, train_top1=100.0 * correct / seen, val_loss=None, val_top1=None,
                       lr=training.optimizer.param_groups[0]["lr"], seconds=seconds, images_per_second=seen / seconds, wall_seconds=seconds)


def _train_step(training: _Training, images: torch.Tensor, labels: torch.Tensor, epoch: int, step: int
                ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimizer step on this rank's part of a batch: forward, the loss (stopping at once when it is not finite),
    backward, gradient clipping, the optimizer and the scheduler. Returns the loss, the logits and the labels they scored."""
    images, labels, weight = distributed.shard(images, labels)  # under torchrun: this rank's part of the global batch
    images = images.to(training.device, non_blocking=True, memory_format=training.memory_format)
    labels = labels.to(training.device, non_blocking=True)
    with training.autocast():
        logits = training.step_model(images)
        loss = training.loss_function(logits.float(), images, labels)
    value = loss.item()
    _stop_if_diverged(training, value, epoch, step)
    training.optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    if training.config.grad_clip_norm:
        torch.nn.utils.clip_grad_norm_(training.model.parameters(), training.config.grad_clip_norm)
    training.optimizer.step()
    training.scheduler.step()
    return value, logits, labels


def _stop_if_diverged(training: _Training, loss: float, epoch: int, step: int) -> None:
    """Raise :class:`TrainingFailed` on every rank at the same step once any rank's loss is not finite."""
    if distributed.all_sum(0.0 if math.isfinite(loss) else 1.0)[0]:
        config = training.config
        raise TrainingFailed(
            f"training diverged in epoch {epoch} (step {step}): the loss became {loss if not math.isfinite(loss) else 'inf or nan on another rank'}; "
            f"lower the learning rate (it was {training.optimizer.param_groups[0]['lr']:.3g}, peak {training.lr:.3g}) or use --lr auto"
            + ("" if config.grad_clip_norm else ", or clip gradients with --grad-clip-norm 1")
        )


def _update_ema(training: _Training) -> None:
    """Fold the weights after this step into their moving average, when one is kept (``config.ema_decay``)."""
    if training.ema is not None:
        training.ema.update_parameters(training.model)


def _validate(training: _Training, result: EpochResult) -> EpochResult:
    """The epoch's ``result`` with the validation split's loss and top-1 (none without a validation split) and the
    epoch's wall time. Rank 0 validates; the others take its numbers, so that every rank saves and stops alike."""
    started = time.perf_counter()
    dataset, val = training.dataset, None
    if len(dataset.val) and training.main_rank:
        val = evaluate(training.evaluated, dataset.loader("val", training.config.eval_batch_size), dataset.classes, training.device)
    val = distributed.from_main(val)
    return replace(result, val_loss=val["loss"] if val else None, val_top1=val["top1"] if val else None,
                   wall_seconds=result.seconds + time.perf_counter() - started)


def _sync_weights(training: _Training) -> None:
    """Give every rank rank 0's weights (and moving average): every rank saves, and goes on from, rank 0's BatchNorm
    statistics."""
    distributed.broadcast_model(training.model)
    if training.ema is not None:
        distributed.broadcast_model(training.ema.module)


def _save_checkpoints(training: _Training, result: EpochResult) -> None:
    """``best.pt`` when this epoch scored best so far (validation top-1, or training top-1 without a validation split);
    ``last.pt`` always, with all a resume needs: optimizer, scheduler, moving average, history, random-number states."""
    score = result.val_top1 if result.val_top1 is not None else result.train_top1
    contract = training.dataset.contract()
    metrics = asdict(result)
    if score > training.best_val:
        training.best_val = score
        save_checkpoint(training.checkpoint_dir / "best.pt", training.evaluated, training.model_spec, contract, epoch=result.epoch,
                        metrics=metrics, lr=training.lr)
    save_checkpoint(
        training.checkpoint_dir / "last.pt",
        training.model,
        training.model_spec,
        contract,
        epoch=result.epoch,
        metrics=metrics,
        optimizer=training.optimizer.state_dict(),
        scheduler=training.scheduler.state_dict(),
        rng={"data": training.data_generator.get_state(), "torch": torch.get_rng_state()},
        history=[asdict(row) for row in training.history],
        best_val_top1=training.best_val,
        lr=training.lr,
        **({"ema": training.ema.state_dict()} if training.ema is not None else {}),
    )


def _log_epoch(result: EpochResult, epochs: int, logger: logging.Logger) -> None:
    """One line in the log, and the epoch's numbers to the tracking backend (MLflow, when configured)."""
    val_text = f"val {result.val_top1:.2f}%" if result.val_top1 is not None else "no val split"
    logger.info(
        f"epoch {result.epoch}/{epochs}: loss {result.train_loss:.4f}, train {result.train_top1:.2f}%, "
        f"{val_text}, lr {result.lr:.4g}, {result.images_per_second:.0f} img/s"
    )
    tracking.log_metrics({key: value for key, value in asdict(result).items() if key != "epoch"}, step=result.epoch)


def _finish(training: _Training) -> None:
    """Leave the result in ``model``, on the CPU in the default memory format: the moving average of the weights when one
    was kept, plain BatchNorm layers (SyncBatchNorm undone), rank 0's weights on every rank."""
    if training.ema is not None:
        training.model.load_state_dict(training.ema.module.state_dict())
    training.restore_batchnorm()
    distributed.broadcast_model(training.model)  # BatchNorm statistics are per rank on CPU: rank 0's model is the one saved and used
    training.model.to("cpu", memory_format=torch.contiguous_format)


def _training_memory_format(model: nn.Module, config: TrainConfig, input_shape: tuple[int, ...], device: torch.device,
                            logger: logging.Logger) -> torch.memory_format:
    """Channels-last when the config asks for it and the model runs in it. A model that flattens its feature maps with
    ``view`` (not ``flatten`` or ``reshape``) cannot take channels-last activations: it trains in the default format.
    The probe runs on a copy: a forward pass updates BatchNorm statistics and quantization observers."""
    if not config.channels_last:
        return torch.preserve_format
    copy = deepcopy(model)

    def probe(memory_format: torch.memory_format) -> None:
        copy.to(memory_format=memory_format)
        with torch.no_grad():
            copy(torch.zeros(2, *input_shape, device=device).contiguous(memory_format=memory_format))

    try:
        probe(torch.channels_last)
        return torch.channels_last
    except RuntimeError as error:
        probe(torch.contiguous_format)  # a model that fails in the default format too is broken either way: its error says why
        logger.info(f"training in the default memory format: this model does not run in channels-last ({str(error).splitlines()[0]})")
        return torch.contiguous_format


def _peak_lr(model: nn.Module, dataset: ImageDataset, config: TrainConfig, augment: Sequence[str], loss_function: LossFunction,
             device: torch.device, checkpoint_dir: Path, state: dict[str, Any] | None, logger: logging.Logger) -> float:
    """``config.lr``, or for 'auto' the range test's choice (measured once per run: a resume reuses it)."""
    if config.lr != "auto":
        return config.lr
    if state is not None and "lr" in state:
        return state["lr"]
    batches = dataset.loader("train", config.batch_size, shuffle=True, augment=augment, generator=torch.Generator().manual_seed(config.seed))
    found = lr_range_test(model, batches, lambda probe, lr: make_optimizer(probe, config, lr), loss_function, device)
    write_json(checkpoint_dir / "lr_range.json", found.as_dict())
    logger.info(
        f"--lr auto: the loss was lowest at lr {found.min_loss_lr:.3g} in a {found.steps}-step range test ({found.stopped}); "
        f"training with peak lr {found.lr:.3g} (lr_range.json)"
    )
    return found.lr


def _judge(history: list[EpochResult], dataset: ImageDataset, default_loss: bool, checkpoint_dir: Path, model: nn.Module) -> None:
    """Write the training verdict into both checkpoints; raise :class:`TrainingFailed` when the model is unusable.

    The verdict is always on held-out images in eval mode: the validation split's best epoch or, without one, the final
    model on the test split. Train-mode running accuracy on augmented batches would pass a model whose eval mode has
    collapsed (stale BatchNorm statistics)."""
    if not history:
        return
    lowest_loss = min(row.train_loss for row in history) if default_loss else None
    if len(dataset.val) > 0:
        split, top1, labels = "validation", max(row.val_top1 for row in history), dataset.val.labels
    else:
        split, labels = "test", dataset.test.labels
        top1 = evaluate(model.eval(), dataset.loader("test", 512), dataset.classes)["top1"]
    verdict = judge_training(top1, labels, dataset.num_classes, split, lowest_loss)
    for path in (checkpoint_dir / "best.pt", checkpoint_dir / "last.pt"):
        payload = load_checkpoint(path)
        payload["training"] = verdict.as_dict()
        write_checkpoint_payload(path, payload)
    if verdict.failed:
        raise TrainingFailed(f"{verdict.reason}; {HINT}")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, max_batches: int = 50, device: torch.device | str = "cpu") -> nn.Module:
    """Re-estimate BatchNorm running statistics as an exact average over ``max_batches`` training batches.

    Use after pruning or after training a model whose BN momentum is too small for its schedule
    (torchvision's MobileNetV3 uses 0.01): stale statistics make eval-mode accuracy collapse.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved_momentum = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for index, (images, _labels) in enumerate(batches):
        if index >= max_batches:
            break
        model(images.to(device))
    for norm, momentum in zip(norms, saved_momentum):
        norm.momentum = momentum
    return model.eval()


def train_run(config: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data`` in ``runs/<name>/``, then evaluate the best checkpoint on the test set.

    Writes config.yaml, train.log, last.pt, best.pt, history in metrics.json and eval.json.
    """
    tracking.require_backend(config.tracking)
    if not distributed.init(resolve_device(config.train.device)).main:  # under torchrun: see udacisense.distributed
        config = config.model_copy(update={"runs_dir": distributed.private_runs_dir(config.runs_dir, config.name, resume), "tracking": TrackingConfig()})
    distributed.barrier()  # rank 0 starts changing the run folder only after the others copied it
    with run_dir_lock(Path(config.runs_dir) / config.name):
        # the data and the model first: a mistake in either is one line that leaves no run folder to refuse the fixed command
        dataset = get_dataset(config.data)
        model_kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.input_shape[0], **config.model.kwargs}
        model_spec = {"name": config.model.name, "kwargs": model_kwargs}
        seed_everything(config.train.seed)  # the initial weights too: the same config trains the same model
        model = create_model(config.model.name, **model_kwargs)
        check_fits(model, config.model.name, dataset.input_shape, dataset.num_classes)
        run_dir = prepare_run_dir(config.runs_dir, config.name, resume=resume, overwrite=overwrite)
        logger = get_logger(run_dir, "train")
        if resume:
            _check_resume_config(run_dir, config)
        save_config(run_dir, config.model_dump(mode="json"))
        with tracking.tracked(config.tracking, run_dir, config.model_dump(mode="json")):  # opened before training: a bad store fails first
            logger.info(
                f"data {dataset.name}: {len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} test, "
                f"input {dataset.input_shape}; model {config.model.name} "
                f"({sum(p.numel() for p in model.parameters()):,} parameters); run folder {run_dir}"
            )
            summary = _train_and_test(config, run_dir, dataset, model, model_spec, resume, logger)
            tracking.log_metrics({"test_top1": summary["test_top1"], "test_top5": summary["test_top5"]})
            tracking.log_artifacts(run_dir / "metrics.json", run_dir / "eval.json", run_dir / "train.log", run_dir / "config.yaml")
        return summary


def _train_and_test(config: RunConfig, run_dir: Path, dataset: ImageDataset, model: nn.Module, model_spec: dict[str, Any], resume: bool,
                    logger: logging.Logger) -> dict[str, Any]:
    """fit(), then the best checkpoint on the test split; writes metrics.json (also for a failed run) and eval.json."""
    try:
        history = fit(model, dataset, config.train, run_dir, model_spec, resume=resume, logger=logger, augment=augmentation(config.data))
    except TrainingFailed as failure:
        last = load_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").exists() else {}
        write_json(run_dir / "metrics.json", {"run": str(run_dir), "model": model_spec, "status": "failed", "failure": str(failure),
                                              "training": last.get("training"), "history": last.get("history", [])})
        logger.error(f"TRAINING FAILED: {failure} (details in {run_dir / 'metrics.json'})", extra=FILE_ONLY)
        raise
    best_model, best_state = load_model(run_dir / "best.pt")
    test = evaluate(best_model, dataset.loader("test", config.train.eval_batch_size), dataset.classes, progress=True)
    summary = {
        "run": str(run_dir),
        "model": model_spec,
        "status": "ok",
        "training": best_state.get("training"),
        "peak_lr": best_state.get("lr"),
        "best_epoch": best_state["epoch"],
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "train_images_per_second": float(np.mean([row.images_per_second for row in history])) if history else None,
        "train_seconds": float(sum(row.seconds for row in history)),
        "history": [asdict(row) for row in history],
    }
    write_json(run_dir / "metrics.json", summary)
    write_json(run_dir / "eval.json", {"checkpoint": str(run_dir / "best.pt"), "split": "test", **test})
    logger.info(f"test top-1 {test['top1']:.2f}% top-5 {test['top5']:.2f}% on {test['count']} images (best epoch {best_state['epoch']})")
    return summary


def _check_resume_config(run_dir: Path, config: RunConfig) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    # read back through the config model, so that a folder written by an older version (augment: true) compares equal
    saved = validate_config(RunConfig, yaml.safe_load(saved_path.read_text()), where=str(saved_path)).model_dump(mode="json")
    current = config.model_dump(mode="json")
    for settings in (saved, current):
        for name in EXECUTION_FIELDS:
            settings["train"].pop(name, None)
    changed = [key for key in ("data", "model", "train") if saved.get(key) != current.get(key)]
    if changed:
        raise UdaciSenseError(
            f"cannot resume {run_dir}: its {', '.join(changed)} settings differ from this command's; "
            "repeat the original options or start a new --name"
        )
