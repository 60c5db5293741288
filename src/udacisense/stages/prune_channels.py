"""Stage ``prune_channels``: remove whole channels (uniform, per-layer, or planned from sensitivity to meet a
MACs/parameter budget), then optionally fine-tune with a teacher. See :mod:`udacisense.techniques.channels`."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.checkpoint import tensors_digest
from udacisense.data import augmentation
from udacisense.io import config_hash, write_json
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
from udacisense.techniques.channels import ChannelPruneConfig, prune_channels, pruning_steps


class PruneChannels(ChannelPruneConfig, FineTuned):
    ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of channels removed from every layer (uniform)")
    budget: dict[Literal["macs", "params"], float] | None = Field(
        default=None, description="plan per-layer ratios by sensitivity to keep at most these shares, e.g. {macs: 0.3, params: 0.25}"
    )
    sensitivity_ratios: tuple[float, ...] = Field(default=(0.25, 0.5, 0.75), description="budget planning: ratios tried on each layer")
    sensitivity_images: int = Field(default=2000, gt=0, description="validation images scored per sensitivity trial")

    search_order: ClassVar[int | None] = 10

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """A MACs and parameter budget planned by sensitivity, a channel ranking and a fine-tune."""
        space.float("budget.macs", 0.15, 0.8)
        space.float("budget.params", 0.1, 0.8)
        space.choice("importance", ("l2", "taylor"))
        draw_fine_tune(space)

    @model_validator(mode="after")
    def _one_rule(self) -> "PruneChannels":
        rules = [name for name, used in (("ratio", self.ratio > 0), ("budget", bool(self.budget)), ("layer_ratios", bool(self.layer_ratios))) if used]
        if len(rules) != 1:
            raise ValueError(f"give exactly one of ratio, budget or layer_ratios (got {', '.join(rules) or 'none'})")
        return self


def describe(params: PruneChannels, info: dict[str, Any]) -> str:
    rule = f"budget {params.budget}" if params.budget else f"ratio {params.ratio}" if params.ratio else "per-layer ratios"
    planned = f", {len(info['plan']['layer_ratios'])} layers cut" if info.get("plan") else ""
    return f"channels, {rule}{planned}{describe_fine_tune(params)}"


@register_stage("prune_channels", PruneChannels, describe)
def prune_channels_stage(model: nn.Module, params: PruneChannels, context: StageContext) -> StageOutput:
    """Structured pruning: remove whole channels (uniform, or planned per layer from sensitivity), then fine-tune."""
    from udacisense.train import fine_tune, recalibrate_batchnorm

    config = library_config(ChannelPruneConfig, params)
    info: dict[str, Any] = {}
    if params.budget:
        info["plan"] = _sensitivity_plan(model, params, context)
        config = config.model_copy(update={"layer_ratios": info["plan"]["layer_ratios"]})
    before = sum(p.numel() for p in model.parameters())
    if params.fine_tune is None:
        prune_channels(model, context.example, config, context.dataset.loader("train", 64, shuffle=True))
        recalibrate_batchnorm(model, context.dataset.loader("train", 128, shuffle=True))  # the cut shifts BatchNorm statistics
    else:  # iterative: each pruning step is followed by a fine-tune, in finetune/step<k>
        teacher, distillation = stage_teacher(model, params.distill, context)  # before pruning: the teacher is the dense model

        def gradient_batches(step: int):  # what Taylor importance ranks by, drawn anew for each step
            return context.dataset.loader("train", 64, shuffle=True, generator=torch.Generator().manual_seed(params.fine_tune.seed + step))

        history = []
        for step in pruning_steps(model, context.example, config, gradient_batches, context.logger):
            history += fine_tune(model, context.dataset, params.fine_tune, context.folder / "finetune" / f"step{step}", context.model_spec,
                                 teacher=teacher, distillation=distillation, logger=context.logger, augment=augmentation(context.data_config),
                                 resume=context.resume)
        info["history"] = [asdict(row) for row in history]
    info["parameters"] = {"before": before, "after": sum(p.numel() for p in model.parameters())}
    return StageOutput(model.eval(), info)


def _sensitivity_plan(model: nn.Module, params: PruneChannels, context: StageContext) -> dict[str, Any]:
    """Per-layer ratios for ``params.budget``; kept in the stage folder so a resumed stage does not redo it."""
    from udacisense.techniques.sensitivity import plan_layer_ratios, save_sensitivity

    plan_path = context.folder / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())
    result = _layer_sensitivity(model, params, context)
    save_sensitivity(result, context.folder)
    plan = plan_layer_ratios(model, context.example, result, params.budget, params.importance, params.round_to, params.protect)
    achieved = ", ".join(f"{100 * share:.1f}% of {metric}" for metric, share in plan["achieved"].items())
    context.logger.info(f"plan keeps {achieved} by pruning {len(plan['layer_ratios'])} layers")
    write_json(plan_path, plan)
    return plan


def _layer_sensitivity(model: nn.Module, params: PruneChannels, context: StageContext) -> dict[str, Any]:
    """The per-layer sensitivity of this model on these validation images, measured once per runs folder: a search's
    trials (and a run re-planned with another budget) differ only in the budget, which the measurement does not use."""
    from udacisense.techniques.sensitivity import layer_sensitivity

    batches = context.dataset.validation_batches(params.sensitivity_images)
    importance = "l2" if params.importance == "taylor" else params.importance  # taylor needs gradients: ranked by l2 here
    settings = (params.sensitivity_ratios, importance, params.round_to, params.protect)
    weights = model.state_dict()
    key = config_hash(list(weights), tensors_digest(weights.values()), tensors_digest(tensor for batch in batches for tensor in batch), settings)
    cached = context.cache_dir / f"sensitivity-{key}.json" if context.cache_dir is not None else None
    if cached is not None and cached.is_file():
        context.logger.info(f"channel-pruning sensitivity of this model on these images: measured before, reused from {cached}")
        return json.loads(cached.read_text())
    context.logger.info(f"measuring channel-pruning sensitivity on {sum(len(labels) for _, labels in batches)} validation images")
    result = layer_sensitivity(copy.deepcopy(model), context.example, batches, context.dataset.classes, params.sensitivity_ratios,
                               importance, params.round_to, params.protect)
    if cached is not None:
        write_json(cached, result)
    return result
