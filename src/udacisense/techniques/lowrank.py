"""Low-rank decomposition: a Linear or 1x1 convolution W (out x in) becomes two thinner layers
(in -> r, r -> out) from the truncated SVD W ≈ U_r S_r V_r^T, split as (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

It saves parameters and MACs only when r * (in + out) < in * out; layers where it would not are
skipped and reported. Checkpoints record the new layers generically, so a factorized model reloads
from its registry architecture without pickling modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.config import StrictModel
from udacisense.errors import UdaciSenseError

DEFAULT_ENERGY = 0.9


class LowRankConfig(StrictModel):
    """Rank by kept spectral energy, or by a share of each layer's parameters."""

    energy: float | None = Field(default=None, gt=0, le=1, description=f"keep this share of sum(singular values^2) (default {DEFAULT_ENERGY})")
    param_ratio: float | None = Field(default=None, gt=0, lt=1, description="keep this share of each layer's parameters")
    layers: tuple[str, ...] = Field(default=(), description="only these layers (default: every Linear and 1x1 Conv2d)")
    min_features: int = Field(default=64, ge=1, description="skip layers narrower than this on both sides")

    @model_validator(mode="after")
    def _one_rule(self) -> "LowRankConfig":
        if self.param_ratio is not None and self.energy is not None:
            raise ValueError("give either energy or param_ratio, not both")
        return self


def _matrix(module: nn.Module) -> torch.Tensor | None:
    """The layer's weight as (out, in), or None when it is not factorizable this way."""
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return module.weight.detach().flatten(1)
    return None


def _factorized_pair(module: nn.Module, rank: int) -> nn.Sequential:
    """Two untrained layers, in -> rank -> out, shaped to replace ``module``."""
    if isinstance(module, nn.Linear):
        return nn.Sequential(nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, module.out_features, bias=module.bias is not None))
    return nn.Sequential(
        nn.Conv2d(module.in_channels, rank, 1, stride=module.stride, bias=False),
        nn.Conv2d(rank, module.out_channels, 1, bias=module.bias is not None),
    )


def choose_rank(singular_values: torch.Tensor, out_features: int, in_features: int, config: LowRankConfig) -> int:
    """Smallest rank keeping ``config.energy`` of the spectrum, or the rank meeting ``config.param_ratio``."""
    if config.param_ratio is not None:
        return max(1, int(config.param_ratio * out_features * in_features / (out_features + in_features)))
    energy = singular_values.pow(2).cumsum(0) / singular_values.pow(2).sum()
    return int((energy < (config.energy or DEFAULT_ENERGY) - 1e-9).sum().item()) + 1


def factorize(model: nn.Module, config: LowRankConfig = LowRankConfig()) -> dict[str, Any]:
    """Replace eligible layers of ``model`` in place by SVD factor pairs; returns per-layer ranks and skips."""
    modules = dict(model.named_modules())
    names = config.layers or tuple(name for name, module in modules.items() if _matrix(module) is not None)
    factorized, skipped = {}, {}
    for name in names:
        module = modules.get(name)
        if module is None:
            raise UdaciSenseError(f"layer '{name}' is not in the model; see 'udacisense profile' for layer names")
        weight = _matrix(module)
        if weight is None:
            raise UdaciSenseError(f"layer '{name}' is a {type(module).__name__} that is not Linear or a 1x1, ungrouped Conv2d")
        out_features, in_features = weight.shape
        if max(out_features, in_features) < config.min_features:
            skipped[name] = f"too narrow ({in_features} -> {out_features})"
            continue
        rank = choose_rank(torch.linalg.svdvals(weight.double()), out_features, in_features, config)
        if rank * (in_features + out_features) >= in_features * out_features:
            skipped[name] = f"rank {rank} would not save parameters ({in_features} -> {out_features})"
            continue
        pair = factorize_layer(module, rank)
        _replace(model, name, pair)
        factorized[name] = {"rank": rank, "params_before": weight.numel(), "params_after": rank * (in_features + out_features)}
    return {"factorized": factorized, "skipped": skipped}


def factorize_layer(module: nn.Module, rank: int) -> nn.Sequential:
    """``module`` (Linear or 1x1 Conv2d) as two layers whose product is its best rank-``rank`` approximation."""
    weight = _matrix(module)
    if weight is None:
        raise UdaciSenseError(f"cannot factorize a {type(module).__name__}; only Linear and 1x1, ungrouped Conv2d layers")
    U, S, Vh = torch.linalg.svd(weight.double(), full_matrices=False)
    pair = _factorized_pair(module, rank)
    root = S[:rank].sqrt()
    with torch.no_grad():
        pair[0].weight.copy_((root[:, None] * Vh[:rank]).reshape(pair[0].weight.shape))
        pair[1].weight.copy_((U[:, :rank] * root).reshape(pair[1].weight.shape))
        if module.bias is not None:
            pair[1].bias.copy_(module.bias)
    return pair


def _replace(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
