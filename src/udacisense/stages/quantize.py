"""Stage ``quantize``: int8 by static post-training calibration (optionally mixed precision), quantization-aware
training, or dynamic int8; it builds the artifact that ships (an XNNPACK int8 ``.pte``, or a ``.ptl`` for
dynamic), so nothing may follow it. See :mod:`udacisense.techniques.quantize`."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.errors import UdaciSenseError
from udacisense.stages.registry import (
    FineTuneConfig,
    SearchDraw,
    StageContext,
    StageOutput,
    StageParams,
    TeacherConfig,
    draw_fine_tune,
    library_config,
    register_stage,
    stage_teacher,
)
from udacisense.techniques.quantize import QuantizeConfig

MIXED_PRECISION_BATCH = 64  # the sensitivity graphs are exported at this static batch size


class Quantize(QuantizeConfig, StageParams):
    max_drop: float | None = Field(default=None, ge=0, description="mixed precision: keep sensitive layers fp32 until the val drop is within this (pt)")
    fine_tune: FineTuneConfig | None = Field(default=None, description="quantization-aware training epochs (method qat)")
    distill: TeacherConfig | None = None

    search_order: ClassVar[int | None] = 100  # it builds the artifact: last

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """Static int8 (an activation observer; sensitive layers kept fp32 within a drop, or none) or quantization-aware
        training (a short fine-tune at a tenth of the learning rate)."""
        if space.choice("method", ("static", "qat")) == "static":
            space.choice("observer", ("histogram", "minmax"))
            space.choice("max_drop", (None, 0.25, 0.5, 1.0))  # None: every layer int8
        else:
            draw_fine_tune(space, lr_scale=0.1, epochs_scale=0.2)

    @model_validator(mode="after")
    def _consistent(self) -> "Quantize":
        if self.method == "qat" and self.fine_tune is None:
            raise ValueError("method qat trains with fake quantization; add 'fine_tune: {epochs: 2, lr: 0.002}'")
        if self.method != "qat" and (self.fine_tune or self.distill):
            raise ValueError(f"method {self.method} does not train; fine_tune and distill belong to method qat")
        if self.max_drop is not None and self.method != "static":
            raise ValueError("max_drop (mixed precision by sensitivity) applies to method static; for QAT name the fp32 layers in protect")
        if self.backend != "xnnpack":
            raise ValueError("udacisense measures int8 models in ExecuTorch, so it needs backend xnnpack; "
                             "use udacisense.techniques.quantize.make_quantizer('x86') from Python for server graphs")
        return self

    def builds_artifact(self) -> str:
        return "ptl" if self.method == "dynamic" else "pte-int8"


def describe(params: Quantize, info: dict[str, Any]) -> str:
    kept = f", fp32 layers: {', '.join(info['float_layers'])}" if info.get("float_layers") else ""
    delegated = f", {100 * info['export']['delegated_share']:.1f}% of nodes on XNNPACK" if info.get("export") else ""
    return f"{params.method} int8{kept}{delegated}"


@register_stage("quantize", Quantize, describe)
def quantize_stage(model: nn.Module, params: Quantize, context: StageContext) -> StageOutput:
    """Quantization to int8: static post-training, quantization-aware training or dynamic, built as the shipped artifact."""
    from udacisense.formats.base import converter_errors
    from udacisense.formats.executorch import export_pte
    from udacisense.formats.torchscript import export_ptl
    from udacisense.profile import serialized_size
    from udacisense.techniques.quantize import quantize_dynamic, quantize_pt2e_static

    config = library_config(QuantizeConfig, params)
    example = context.example
    info: dict[str, Any] = {}
    if config.method == "dynamic":
        quantized, info["dynamic"] = quantize_dynamic(model)
        info["state_dict_bytes"] = {"fp32": serialized_size(model)["bytes"], "dynamic_int8": serialized_size(quantized)["bytes"]}
        path = context.folder / "model_dynamic.ptl"
        export_ptl(quantized, example, path)
        return StageOutput(model, info, artifacts={"ptl": path})
    float_layers = config.protect
    if params.max_drop is not None:
        info["mixed_precision"] = _plan_mixed_precision(model, config, params.max_drop, context)
        float_layers = tuple(info["mixed_precision"]["float_layers"])
    source = None
    if config.method == "static":
        calibration = context.dataset.calibration_batches(config.calibration_images)
        graph = quantize_pt2e_static(model, example, calibration, observer=config.observer, protect=float_layers,
                                     per_channel=config.per_channel)
    else:
        graph, source, info["history"] = _quantization_aware_training(model, params, float_layers, context)
    info["float_layers"] = list(float_layers)
    path = context.folder / "model_int8.pte"
    with converter_errors("pte-int8"):
        info["export"] = export_pte(graph, example, path)
    return StageOutput(model, info, artifacts={"pte-int8": path}, source=source)


def _plan_mixed_precision(model: nn.Module, config: QuantizeConfig, max_drop: float, context: StageContext) -> dict[str, Any]:
    """Layer sensitivities on up to 1,024 validation images and the fp32 layers that bring the drop within ``max_drop``."""
    from udacisense.techniques.mixed_precision import choose_float_layers, layer_quantization_sensitivity

    context.logger.info("measuring each layer's int8 sensitivity on validation images")
    batches = [batch for batch in context.dataset.validation_batches(1024, MIXED_PRECISION_BATCH) if len(batch[1]) == MIXED_PRECISION_BATCH]
    if not batches:
        raise UdaciSenseError(f"mixed precision needs at least {MIXED_PRECISION_BATCH} validation images")
    calibration = context.dataset.calibration_batches(config.calibration_images, MIXED_PRECISION_BATCH)
    sensitivity = layer_quantization_sensitivity(model, calibration, batches, config.observer)
    plan = choose_float_layers(model, sensitivity, calibration, batches, max_drop, observer=config.observer)
    context.logger.info(f"kept in fp32: {', '.join(plan['float_layers']) or 'none'}")
    return plan | {"sensitivity": sensitivity["layers"]}


def _quantization_aware_training(model: nn.Module, params: Quantize, float_layers: tuple[str, ...], context: StageContext):
    """Fine-tune with fake quantization (BatchNorm and observers frozen from the configured epochs), then convert.
    Returns the int8 graph, the trained fake-quantized graph (what the int8 file must agree with) and the history."""
    from udacisense.techniques.quantize import convert_qat, freeze_qat, prepare_qat
    from udacisense.train import fine_tune

    train_config = params.fine_tune
    prepared = prepare_qat(model, context.example, protect=float_layers)
    never = train_config.epochs + 1

    def freeze(epoch: int) -> None:
        freeze_qat(prepared, batchnorm=epoch >= (params.freeze_batchnorm_epoch or never),
                   observers=epoch >= (params.freeze_observer_epoch or never))

    teacher, distillation = stage_teacher(model, params.distill, context)  # the fp32 model (prepare_qat worked on a copy)
    history = fine_tune(prepared, context.dataset, train_config, Path(context.folder) / "qat", context.model_spec, teacher=teacher,
                        distillation=distillation, on_epoch_start=freeze, logger=context.logger, resume=context.resume)
    freeze_qat(prepared, batchnorm=True, observers=True)  # the ranges conversion uses; measuring must not move them
    trained = copy.deepcopy(prepared)  # conversion rewrites the graph in place
    return convert_qat(prepared), trained, [asdict(row) for row in history]



