"""Stage ``factorize``: split Linear and 1x1 convolutions into two thinner layers by truncated SVD, then
optionally fine-tune. See :mod:`udacisense.techniques.lowrank`. The checkpoint records the new layers
generically (:mod:`udacisense.checkpoint`), so nothing here is needed to reload a factorized model."""

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
from udacisense.techniques.lowrank import LowRankConfig, factorize


class Factorize(LowRankConfig, FineTuned):
    search_order: ClassVar[int | None] = 20

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """The spectral energy each factorized layer keeps, and a fine-tune."""
        space.float("energy", 0.5, 0.95)
        draw_fine_tune(space)


def describe(params: Factorize, info: dict[str, Any]) -> str:
    return f"{len(info.get('factorized', {}))} layers factorized{describe_fine_tune(params)}"


@register_stage("factorize", Factorize, describe)
def factorize_stage(model: nn.Module, params: Factorize, context: StageContext) -> StageOutput:
    """Low-rank decomposition: split Linear and 1x1 convolutions into two thinner layers by SVD, then fine-tune."""
    from udacisense.train import fine_tune

    teacher, distillation = stage_teacher(model, params.distill, context)  # before factorizing: the teacher is the whole model
    report = factorize(model, library_config(LowRankConfig, params))
    context.logger.info(f"factorized {len(report['factorized'])} layers, skipped {len(report['skipped'])}")
    if params.fine_tune is not None:
        fine_tune(model, context.dataset, params.fine_tune, context.folder / "finetune", context.model_spec, teacher=teacher,
                  distillation=distillation, logger=context.logger, augment=augmentation(context.data_config), resume=context.resume)
    return StageOutput(model.eval(), report)
