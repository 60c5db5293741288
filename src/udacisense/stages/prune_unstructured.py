"""Stage ``prune_unstructured``: zero the smallest weights, one-shot or on a cubic schedule while fine-tuning.
See :mod:`udacisense.compress.prune`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn as nn

from udacisense.compress.prune import UnstructuredPruneConfig, prune_and_fine_tune, prune_unstructured, weight_sparsity
from udacisense.stages.registry import (
    FineTuned,
    SearchDraw,
    StageContext,
    StageOutput,
    describe_fine_tune,
    draw_fine_tune,
    fit_options,
    library_config,
    register_stage,
)


class PruneUnstructured(UnstructuredPruneConfig, FineTuned):
    search_order: ClassVar[int | None] = 30

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """A target sparsity reached gradually while fine-tuning."""
        space.float("ratio", 0.3, 0.9)
        space.set("schedule", "gradual")
        draw_fine_tune(space)


def describe(params: PruneUnstructured, info: dict[str, Any]) -> str:
    return (f"{100 * params.ratio:.0f}% of weights ({params.scope}), sparsity now {100 * info['weight_sparsity']:.1f}%"
            f"{describe_fine_tune(params)}")


@register_stage("prune_unstructured", PruneUnstructured, describe)
def prune_unstructured_stage(model: nn.Module, params: PruneUnstructured, context: StageContext) -> StageOutput:
    """Unstructured pruning: zero the smallest weights (smaller compressed file; same dense shapes and speed)."""
    config = library_config(UnstructuredPruneConfig, params)
    if params.fine_tune is None:
        prune_unstructured(model, config.ratio, config.scope, config.protect)
    else:
        prune_and_fine_tune(model, config, context.dataset, params.fine_tune, context.folder / "finetune", context.model_spec,
                            **fit_options(model, params, context))
    return StageOutput(model.eval(), {"weight_sparsity": weight_sparsity(model, config.protect)})
