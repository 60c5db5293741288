"""Unstructured magnitude (L1) pruning of Conv2d and Linear weights, one-shot or gradual.

Zeros do not make a dense file smaller or a dense kernel faster: the honest gains are the
non-zero count and the gzip size (zeros compress), both reported by :mod:`udacisense.profile`.
Masks are applied with ``torch.nn.utils.prune`` and made permanent at once, so the model's
state dict never carries ``weight_orig``/``weight_mask`` and loads into the plain architecture.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Literal

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
from pydantic import Field

from udacisense.config import StrictModel
from udacisense.errors import UdaciSenseError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


class UnstructuredPruneConfig(StrictModel):
    """Target sparsity of the prunable weights and how to reach it."""

    ratio: float = Field(ge=0.0, lt=1.0, description="share of Conv2d/Linear weights set to zero (the target sparsity)")
    scope: Literal["global", "layer"] = Field(
        default="global", description="global ranks all weights together; layer prunes each layer to the same sparsity"
    )
    schedule: Literal["one-shot", "gradual"] = Field(
        default="one-shot", description="gradual raises sparsity on a cubic schedule over the fine-tuning epochs"
    )
    protect: tuple[str, ...] = Field(default=(), description="layer names to leave dense")


def prunable_layers(model: nn.Module, protect: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Conv2d and Linear layers by name, minus ``protect``; a protected name that is not prunable is an error."""
    layers = {name: module for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES)}
    unknown = [name for name in protect if name not in layers]
    if unknown:
        raise UdaciSenseError(
            f"cannot protect {', '.join(unknown)}: not a Conv2d or Linear layer of this model; "
            f"prunable layers include {', '.join(list(layers)[:6])}, …"
        )
    return {name: module for name, module in layers.items() if name not in protect}


def prune_unstructured(model: nn.Module, ratio: float, scope: str = "global", protect: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights until a share ``ratio`` of the prunable weights are zero; returns the masks.

    Weights already zero rank lowest, so raising the ratio step by step never revives one.
    """
    if not 0.0 <= ratio < 1.0:
        raise UdaciSenseError(f"ratio must be in [0, 1), got {ratio}")
    if scope not in ("global", "layer"):
        raise UdaciSenseError(f"unknown pruning scope '{scope}'; choose 'global' or 'layer'")
    layers = prunable_layers(model, protect)
    masks = {}
    with _contiguous_weights(layers.values()):
        if scope == "global":
            torch_prune.global_unstructured(
                [(module, "weight") for module in layers.values()], pruning_method=torch_prune.L1Unstructured, amount=ratio
            )
        else:
            for module in layers.values():
                torch_prune.l1_unstructured(module, "weight", amount=ratio)
        for name, module in layers.items():
            masks[name] = module.weight_mask.detach().clone().bool()
            torch_prune.remove(module, "weight")
    return masks


@contextmanager
def _contiguous_weights(layers: Iterable[nn.Module]) -> Iterator[None]:
    """torch.nn.utils.prune flattens weights with ``view(-1)``, which a channels-last weight refuses (``fit`` trains in
    channels-last, and gradual pruning prunes between its epochs): prune contiguous weights, then give each one its
    memory format back."""
    layers = list(layers)
    channels_last = [module for module in layers if module.weight.dim() == 4 and not module.weight.is_contiguous()
                     and module.weight.is_contiguous(memory_format=torch.channels_last)]
    for module in layers:
        module.weight.data = module.weight.data.contiguous()
    try:
        yield
    finally:
        for module in channels_last:
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-zero pruned weights (after an optimizer step moved them)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            weight = modules[name].weight
            weight.mul_(mask.to(weight.device, weight.dtype))


def cubic_sparsity(step: int, total_steps: int, ratio: float, initial_ratio: float = 0.0) -> float:
    """Zhu & Gupta (2017): the sparsity at ``step`` rises fast at first, then slowly, from ``initial_ratio`` to ``ratio``
    at ``total_steps``."""
    progress = min(max(step / total_steps, 0.0), 1.0)
    return ratio + (initial_ratio - ratio) * (1.0 - progress) ** 3


def weight_sparsity(model: nn.Module, protect: tuple[str, ...] = ()) -> float:
    """Share of zeros among the prunable (Conv2d/Linear) weights, those in ``protect`` left out."""
    layers = prunable_layers(model, protect).values()
    total = sum(module.weight.numel() for module in layers)
    zeros = sum(int((module.weight == 0).sum()) for module in layers)
    return zeros / max(total, 1)


def pruning_hooks(
    model: nn.Module, config: UnstructuredPruneConfig, epochs: int, logger: logging.Logger | None = None
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Pruning to ``config.ratio`` while ``model`` trains for ``epochs``: ``(raise_sparsity, keep_zeros)``, the
    ``on_epoch_start`` and ``on_step_end`` hooks of :func:`udacisense.train.fine_tune`.

    ``raise_sparsity(epoch)`` prunes at once (one-shot) or on a cubic schedule over the first two thirds of the epochs
    (gradual); ``keep_zeros()`` re-zeroes the pruned weights after each optimizer step. Call ``keep_zeros()`` once more
    after training (an average of the weights may have revived some): the model then ends at exactly the requested
    sparsity, with its masks made permanent.
    """
    logger = logger or logging.getLogger("udacisense")
    ramp_epochs = max(1, round(epochs * 2 / 3)) if config.schedule == "gradual" else 1
    masks: dict[str, torch.Tensor] = {}

    def raise_sparsity(epoch: int) -> None:
        if epoch <= ramp_epochs:
            target = cubic_sparsity(epoch, ramp_epochs, config.ratio)
            masks.update(prune_unstructured(model, target, config.scope, config.protect))
            logger.info(f"epoch {epoch}: weight sparsity {100 * weight_sparsity(model, config.protect):.1f}%")
        elif not masks:  # resumed after the ramp: the zeros on disk are the masks
            masks.update({name: module.weight != 0 for name, module in prunable_layers(model, config.protect).items()})

    return raise_sparsity, lambda: apply_masks(model, masks)
