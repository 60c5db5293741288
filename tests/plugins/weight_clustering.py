"""A stage defined outside the package, as a user would add a technique: weight clustering (weight sharing).

Each Conv2d/Linear weight tensor is replaced by its nearest of ``clusters`` centroids found by k-means
on that layer's weights, so the file compresses well (few distinct values) while the architecture
stays the same. Nothing in udacisense is edited to add it: importing this module registers it, and its search space
makes it one more choice of ``udacisense search``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import Field

from udacisense.stages import SearchDraw, StageContext, StageOutput, StageParams, register_stage


class WeightClustering(StageParams):
    clusters: int = Field(default=16, ge=2, le=256, description="distinct values per layer")
    iterations: int = Field(default=20, ge=1)

    search_order: ClassVar[int | None] = 40  # after pruning, before quantization

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """How many shared values each layer keeps."""
        space.choice("clusters", (8, 32, 128))


def cluster_weights(weight: torch.Tensor, clusters: int, iterations: int) -> torch.Tensor:
    """1-D k-means (centroids initialised on quantiles) of ``weight``'s values; returns the clustered tensor."""
    values = weight.detach().flatten()
    centroids = torch.quantile(values, torch.linspace(0, 1, clusters))
    for _ in range(iterations):
        assignment = (values[:, None] - centroids[None, :]).abs().argmin(1)
        for index in range(clusters):
            members = values[assignment == index]
            if members.numel():
                centroids[index] = members.mean()
    assignment = (values[:, None] - centroids[None, :]).abs().argmin(1)
    return centroids[assignment].view_as(weight)


def describe(params: WeightClustering, info: dict[str, Any]) -> str:
    return f"{params.clusters} shared values in each of {info['layers']} layers"


@register_stage("weight_clustering", WeightClustering, describe)
def weight_clustering(model: nn.Module, params: WeightClustering, context: StageContext) -> StageOutput:
    """Weight clustering: every Conv2d/Linear weight takes one of k shared values (k-means per layer)."""
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for module in layers:
            module.weight.copy_(cluster_weights(module.weight, params.clusters, params.iterations))
    context.logger.info(f"clustered {len(layers)} layers to {params.clusters} values")
    return StageOutput(model.eval(), {"layers": len(layers)})
