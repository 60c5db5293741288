"""``--lr auto``: Leslie Smith's learning-rate range test, as fastai's ``lr_find`` runs it.

A copy of the model trains for up to ``steps`` steps while the learning rate grows exponentially
from ``start`` to ``end``; the test stops when the smoothed loss passes four times its minimum or
stops being finite. The suggestion is the learning rate at the minimum smoothed loss divided by
ten: the steepest stable region lies about a decade below the point where the loss turns up. The
model itself is left untouched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn

SMOOTHING = 0.9  # exponential smoothing of the per-step loss, bias-corrected
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
LOWEST, HIGHEST = 1e-5, 1.0  # the suggestion is clamped to this range


@dataclass(frozen=True)
class LrRange:
    """What the range test measured and chose."""

    lr: float
    min_loss_lr: float
    min_loss: float
    steps: int
    stopped: str  # "diverged" or "end of range"
    curve: list[tuple[float, float]]  # (learning rate, smoothed loss) per step

    def as_dict(self) -> dict:
        return asdict(self)


def _repeat(batches: Iterable) -> Iterator:
    while True:
        yield from batches


def lr_range_test(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    make_optimizer: Callable[[nn.Module, float], torch.optim.Optimizer],
    loss_function: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 200,
) -> LrRange:
    """Run the range test on a copy of ``model`` and return the suggested peak learning rate."""
    probe = copy.deepcopy(model).to(device).train()
    optimizer = make_optimizer(probe, start)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=(end / start) ** (1 / max(1, steps - 1)))
    average, best, best_lr = 0.0, math.inf, start
    curve: list[tuple[float, float]] = []
    stopped = "end of range"
    for step, (images, labels) in zip(range(steps), _repeat(batches)):
        images, labels = images.to(device), labels.to(device)
        lr = optimizer.param_groups[0]["lr"]
        loss = loss_function(probe(images).float(), images, labels)
        value = loss.item()
        if not math.isfinite(value):
            stopped = "diverged"
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        curve.append((lr, smoothed))
        if smoothed < best:
            best, best_lr = smoothed, lr
        if step > 5 and smoothed > DIVERGENCE * best:
            stopped = "diverged"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    suggestion = min(HIGHEST, max(LOWEST, best_lr / 10))
    return LrRange(suggestion, best_lr, best, len(curve), stopped, curve)
