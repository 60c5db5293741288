"""Pipeline stages: each takes the current fp32 model and the run context and returns the model it made.

A stage is a function plus a pydantic parameter model, registered by name::

    @register_stage("prune_channels", PruneChannelsStage)
    def prune_channels_stage(model, params, context) -> StageOutput: ...

The runner (:mod:`udacisense.pipeline.runner`) owns checkpoints, measurement, ``stages.jsonl``
and resume, so a new technique plugs in here without touching it. Recipe keys map one-to-one
onto the parameter models; their technique fields are the library configs themselves.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.compress.channels import ChannelPruneConfig
from udacisense.compress.lowrank import LowRankConfig
from udacisense.compress.prune import UnstructuredPruneConfig
from udacisense.compress.quantize import QuantizeConfig
from udacisense.config import DataConfig, DistillConfig, StrictModel, TrainConfig
from udacisense.data import ImageDataset
from udacisense.errors import UdaciSenseError


@dataclass
class StageContext:
    """What a stage may use besides the model: data, where to write, the baseline, a logger."""

    dataset: ImageDataset
    data_config: DataConfig
    model_spec: dict[str, Any]
    contract: dict[str, Any]
    folder: Path
    baseline_checkpoint: Path
    logger: logging.Logger
    resume: bool = False

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(self.contract["shape"])


@dataclass
class StageOutput:
    """The stage's fp32 model, what it did (plans, ranks, histories), and any artifact it already built."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    params: type[StrictModel]
    run: Callable[[nn.Module, Any, StageContext], StageOutput]

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


STAGES: dict[str, Stage] = {}


def register_stage(name: str, params: type[StrictModel]):
    """Register ``function(model, params, context) -> StageOutput`` as the recipe stage ``name``."""

    def decorator(function: Callable[[nn.Module, Any, StageContext], StageOutput]):
        STAGES[name] = Stage(name, params, function)
        return function

    return decorator


def get_stage(name: str, where: str = "stage") -> Stage:
    """The registered stage ``name``; an unknown name suggests the closest known one."""
    if name not in STAGES:
        guess = difflib.get_close_matches(name, list(STAGES), n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(sorted(STAGES))}"
        raise UdaciSenseError(f"invalid recipe: {where} is '{name}', which is not a stage ({hint})")
    return STAGES[name]


# --- shared parameters ----------------------------------------------------------------------


class FineTuneConfig(TrainConfig):
    """Training after a compression step: gentler defaults than training from scratch."""

    epochs: int = Field(default=5, gt=0)
    lr: float = Field(default=0.02, gt=0)
    schedule: Literal["cosine", "onecycle"] = "cosine"


class TeacherConfig(StrictModel):
    """Distillation while fine-tuning: ``self`` is the model before this stage, ``baseline`` the run's baseline."""

    teacher: Literal["self", "baseline"] | Path = "self"
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)


class FineTuned(StrictModel):
    """Optional fine-tuning, optionally distilled, after a compression step."""

    fine_tune: FineTuneConfig | None = None
    distill: TeacherConfig | None = None

    @model_validator(mode="after")
    def _distill_needs_training(self):
        if self.distill is not None and self.fine_tune is None:
            raise ValueError("distill teaches during fine-tuning; add 'fine_tune: {epochs: N}' or remove 'distill'")
        return self


def _library_config(config_type: type[StrictModel], params: StrictModel, **changes: Any) -> Any:
    """The technique's own config from a stage's parameters (which extend it with stage-only fields)."""
    fields = params.model_dump(include=set(config_type.model_fields))
    return config_type.model_validate(fields | changes)


def _distill_config(spec: TeacherConfig | None, context: StageContext) -> DistillConfig | None:
    if spec is None:
        return None
    teacher = None if spec.teacher == "self" else context.baseline_checkpoint if spec.teacher == "baseline" else spec.teacher
    return DistillConfig(teacher=teacher, temperature=spec.temperature, alpha=spec.alpha)


def _fit_options(model: nn.Module, params: FineTuned, context: StageContext) -> dict[str, Any]:
    """Keyword arguments for fit(): logging, augmentation, resume, and the (frozen, pre-stage) teacher's loss."""
    from udacisense.compress.apply import teacher_loss

    return {
        "logger": context.logger,
        "augment": context.data_config.augment,
        "resume": context.resume,
        "loss_function": teacher_loss(model, context.dataset, params.fine_tune, _distill_config(params.distill, context)),
    }


# --- stages ---------------------------------------------------------------------------------


class TeacherModelSpec(StrictModel):
    """A teacher trained inside the stage (cached with it)."""

    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


class DistillStage(StrictModel):
    teacher: Literal["baseline"] | Path | TeacherModelSpec | None = Field(
        default=None, description="'baseline', a checkpoint path, or {model: ..., train: {...}} to train one here"
    )
    student: Literal["current", "scratch"] = Field(default="current", description="scratch: a fresh copy of the baseline architecture")
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _needs_teacher(self) -> "DistillStage":
        if self.teacher is None:
            raise ValueError("distill needs a teacher: 'baseline', a checkpoint path, or {model: mobilenet_v3_large, train: {epochs: 10}}")
        return self


@register_stage("distill", DistillStage)
def distill_stage(model: nn.Module, params: DistillStage, context: StageContext) -> StageOutput:
    """Knowledge distillation: train the student (current model or a fresh one) on a teacher's soft targets."""
    from udacisense.compress.distill import distill, load_teacher
    from udacisense.config import ModelConfig, RunConfig
    from udacisense.models import create_model
    from udacisense.train import train_run

    info: dict[str, Any] = {}
    if isinstance(params.teacher, TeacherModelSpec):
        config = RunConfig(name="teacher", runs_dir=context.folder, data=context.data_config,
                           model=ModelConfig(name=params.teacher.model, kwargs=params.teacher.model_kwargs), train=params.teacher.train)
        context.logger.info(f"training the teacher {params.teacher.model} for {params.teacher.train.epochs} epochs")
        finished = (context.folder / "teacher" / "metrics.json").is_file()
        if not finished:
            train_run(config, resume=context.resume, overwrite=not context.resume)
        teacher_path = context.folder / "teacher" / "best.pt"
        info["teacher_test_top1"] = json.loads((context.folder / "teacher" / "metrics.json").read_text())["test_top1"]
    else:
        teacher_path = context.baseline_checkpoint if params.teacher == "baseline" else Path(params.teacher)
    teacher = load_teacher(teacher_path, tuple(context.contract["shape"][1:]))
    info["teacher"] = str(teacher_path)
    student = create_model(context.model_spec["name"], **context.model_spec["kwargs"]) if params.student == "scratch" else model
    distill(student, teacher, context.dataset, params.train, context.folder / "student", context.model_spec,
            DistillConfig(temperature=params.temperature, alpha=params.alpha),
            augment=context.data_config.augment, logger=context.logger, resume=context.resume)
    return StageOutput(student.eval(), info)


class PruneChannelsStage(ChannelPruneConfig, FineTuned):
    ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of channels removed from every layer (uniform)")
    budget: dict[Literal["macs", "params"], float] | None = Field(
        default=None, description="plan per-layer ratios by sensitivity to keep at most these shares, e.g. {macs: 0.3, params: 0.25}"
    )
    sensitivity_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    sensitivity_images: int = Field(default=2000, gt=0, description="validation images scored per sensitivity trial")

    @model_validator(mode="after")
    def _one_rule(self) -> "PruneChannelsStage":
        rules = [name for name, used in (("ratio", self.ratio > 0), ("budget", bool(self.budget)), ("layer_ratios", bool(self.layer_ratios))) if used]
        if len(rules) != 1:
            raise ValueError(f"give exactly one of ratio, budget or layer_ratios (got {', '.join(rules) or 'none'})")
        return self


@register_stage("prune_channels", PruneChannelsStage)
def prune_channels_stage(model: nn.Module, params: PruneChannelsStage, context: StageContext) -> StageOutput:
    """Structured pruning: remove whole channels (uniform, or planned per layer from sensitivity), then fine-tune."""
    from udacisense.compress.channels import prune_channels, prune_channels_and_fine_tune
    from udacisense.train import recalibrate_batchnorm

    config = _library_config(ChannelPruneConfig, params)
    info: dict[str, Any] = {}
    if params.budget:
        info["plan"] = _sensitivity_plan(model, params, context)
        config = config.model_copy(update={"layer_ratios": info["plan"]["layer_ratios"]})
    before = sum(p.numel() for p in model.parameters())
    if params.fine_tune is None:
        prune_channels(model, context.example, config, context.dataset.loader("train", 64, shuffle=True))
        recalibrate_batchnorm(model, context.dataset.loader("train", 128, shuffle=True))
    else:
        prune_channels_and_fine_tune(model, config, context.dataset, params.fine_tune, context.folder / "finetune",
                                     context.model_spec, **_fit_options(model, params, context))
    info["parameters"] = {"before": before, "after": sum(p.numel() for p in model.parameters())}
    return StageOutput(model.eval(), info)


def _sensitivity_plan(model: nn.Module, params: PruneChannelsStage, context: StageContext) -> dict[str, Any]:
    """Per-layer ratios for ``params.budget``; kept in the stage folder so a resumed stage does not redo it."""
    from udacisense.compress.sensitivity import layer_sensitivity, plan_layer_ratios, save_sensitivity
    from udacisense.io import write_json

    plan_path = context.folder / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())
    split = context.dataset.val if len(context.dataset.val) else context.dataset.train
    images = context.dataset.normalization.apply(split.images[: params.sensitivity_images])
    batches = list(zip(images.split(500), split.labels[: params.sensitivity_images].split(500)))
    context.logger.info(f"measuring channel-pruning sensitivity on {len(images)} validation images")
    result = layer_sensitivity(copy.deepcopy(model), context.example, batches, context.dataset.classes, params.sensitivity_ratios,
                               "l2" if params.importance == "taylor" else params.importance, params.round_to, params.protect)
    save_sensitivity(result, context.folder)
    plan = plan_layer_ratios(model, context.example, result, params.budget, params.importance, params.round_to, params.protect)
    achieved = ", ".join(f"{100 * share:.1f}% of {metric}" for metric, share in plan["achieved"].items())
    context.logger.info(f"plan keeps {achieved} by pruning {len(plan['layer_ratios'])} layers")
    write_json(plan_path, plan)
    return plan


class PruneUnstructuredStage(UnstructuredPruneConfig, FineTuned):
    pass


@register_stage("prune_unstructured", PruneUnstructuredStage)
def prune_unstructured_stage(model: nn.Module, params: PruneUnstructuredStage, context: StageContext) -> StageOutput:
    """Unstructured pruning: zero the smallest weights (smaller compressed file; same dense shapes and speed)."""
    from udacisense.compress.prune import prune_and_fine_tune, prune_unstructured, weight_sparsity

    config = _library_config(UnstructuredPruneConfig, params)
    if params.fine_tune is None:
        prune_unstructured(model, config.sparsity, config.scope, config.exclude)
    else:
        prune_and_fine_tune(model, config, context.dataset, params.fine_tune, context.folder / "finetune", context.model_spec,
                            **_fit_options(model, params, context))
    return StageOutput(model.eval(), {"weight_sparsity": weight_sparsity(model, config.exclude)})


class FactorizeStage(LowRankConfig, FineTuned):
    pass


@register_stage("factorize", FactorizeStage)
def factorize_stage(model: nn.Module, params: FactorizeStage, context: StageContext) -> StageOutput:
    """Low-rank decomposition: split Linear and 1x1 convolutions into two thinner layers by SVD, then fine-tune."""
    from udacisense.compress.lowrank import factorize
    from udacisense.train import fit

    options = _fit_options(model, params, context) if params.fine_tune else {}  # the teacher is the unfactorized model
    report = factorize(model, _library_config(LowRankConfig, params))
    if params.fine_tune is not None:
        fit(model, context.dataset, params.fine_tune, context.folder / "finetune", context.model_spec, **options)
    ranks = {name: row["rank"] for name, row in report["factorized"].items()}
    return StageOutput(model.eval(), report, checkpoint_extra={"factorized": ranks})


class QuantizeStage(QuantizeConfig):
    max_drop: float | None = Field(default=None, ge=0, description="mixed precision: keep sensitive layers fp32 until the val drop is within this (pt)")
    fine_tune: FineTuneConfig | None = Field(default=None, description="quantization-aware training epochs (method qat)")
    distill: TeacherConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "QuantizeStage":
        if self.method == "qat" and self.fine_tune is None:
            raise ValueError("method qat trains with fake quantization; add 'fine_tune: {epochs: 2, lr: 0.002}'")
        if self.method != "qat" and (self.fine_tune or self.distill):
            raise ValueError(f"method {self.method} does not train; fine_tune and distill belong to method qat")
        if self.max_drop is not None and self.method != "static":
            raise ValueError("max_drop (mixed precision by sensitivity) applies to method static")
        return self


@register_stage("quantize", QuantizeStage)
def quantize_stage(model: nn.Module, params: QuantizeStage, context: StageContext) -> StageOutput:
    """Quantization to int8: static post-training, quantization-aware training or dynamic, built as the shipped artifact."""
    from udacisense.compress.apply import quantize_to_artifact

    kind, path, info = quantize_to_artifact(
        model, context.model_spec, context.dataset, _library_config(QuantizeConfig, params), context.folder, params.fine_tune,
        _distill_config(params.distill, context), max_drop=params.max_drop, resume=context.resume, logger=context.logger,
    )
    return StageOutput(model, info, artifacts={kind: path})


def list_stages() -> list[tuple[str, str]]:
    """(name, one-line summary) of every registered stage."""
    return [(name, stage.summary) for name, stage in sorted(STAGES.items())]
