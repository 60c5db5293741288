"""Stage ``prune_unstructured``: zero the smallest weights, one-shot or on a cubic schedule while fine-tuning.
See :mod:`udacisense.techniques.prune`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn as nn

from udacisense.data import augmentation
from udacisense.stages.registry import (
    FineTuned,
    SearchDraw,
    StageContext,
    StageOutput,
    describe_fine_tune,
    draw_fine_tune,
    library_config,
    register_stage,
    stage_teacher,
)
from udacisense.techniques.prune import UnstructuredPruneConfig, prune_unstructured, pruning_hooks, weight_sparsity


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
    from udacisense.train import fine_tune

    config = library_config(UnstructuredPruneConfig, params)
    if params.fine_tune is None:
        prune_unstructured(model, config.ratio, config.scope, config.protect)
    else:
        teacher, distillation = stage_teacher(model, params.distill, context)  # before pruning: the teacher is the dense model
        raise_sparsity, keep_zeros = pruning_hooks(model, config, params.fine_tune.epochs, context.logger)
        fine_tune(model, context.dataset, params.fine_tune, context.folder / "finetune", context.model_spec, teacher=teacher,
                  distillation=distillation, on_epoch_start=raise_sparsity, on_step_end=keep_zeros, logger=context.logger,
                  augment=augmentation(context.data_config), resume=context.resume)
        keep_zeros()
    return StageOutput(model.eval(), {"weight_sparsity": weight_sparsity(model, config.protect)})
