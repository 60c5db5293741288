"""Stage ``distill``: train a student on a teacher's soft targets (Hinton et al., 2015). The student is the
current model, a fresh copy of its architecture (``scratch``) or another architecture (``{model: ...}``);
the teacher is the baseline, a checkpoint, or a model trained inside the stage. See :mod:`udacisense.distillation`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.config import DistillConfig, SoftTargetConfig, StrictModel, TrainConfig
from udacisense.data import augmentation
from udacisense.stages.registry import StageContext, StageOutput, StageParams, library_config, register_stage


class TeacherModelSpec(StrictModel):
    """A teacher trained inside the stage (cached with it)."""

    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


class StudentModelSpec(StrictModel):
    """A student of another architecture, trained from scratch (e.g. a small model taught by a large baseline)."""

    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


class Distill(SoftTargetConfig, StageParams):
    teacher: Literal["baseline"] | Path | TeacherModelSpec | None = Field(
        default=None, description="'baseline', a checkpoint path, or {model: ..., train: {...}} to train one here"
    )
    student: Literal["current", "scratch"] | StudentModelSpec = Field(
        default="current", description="current model, scratch (a fresh copy of its architecture) or {model: ..., model_kwargs: {...}}"
    )
    cache_teacher_logits: bool = Field(default=False, description="compute each image's teacher logits once (needs data.augment none)")
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _needs_teacher(self) -> "Distill":
        if self.teacher is None:
            raise ValueError("distill needs a teacher: 'baseline', a checkpoint path, or {model: mobilenet_v3_large, train: {epochs: 10}}")
        return self

    def must_come_first(self) -> str | None:
        if self.student == "current":
            return None
        return "trains a new student from scratch (use 'student: current' to keep the model)"


def describe(params: Distill, info: dict[str, Any]) -> str:
    student = params.student if isinstance(params.student, str) else f"{params.student.model} from scratch"
    return f"student {student}, T={params.temperature}, α={params.alpha}, {params.train.epochs} epochs"


@register_stage("distill", Distill, describe)
def distill_stage(model: nn.Module, params: Distill, context: StageContext) -> StageOutput:
    """Knowledge distillation: train the student (current model, a fresh one, or another architecture) on a teacher's soft targets."""
    from udacisense.config import ModelConfig, RunConfig
    from udacisense.distillation import load_teacher
    from udacisense.models import check_fits, create_model
    from udacisense.train import fine_tune, seed_everything, train_run

    info: dict[str, Any] = {}
    if isinstance(params.teacher, TeacherModelSpec):
        config = RunConfig(name="teacher", runs_dir=context.folder, data=context.data_config,
                           model=ModelConfig(name=params.teacher.model, kwargs=params.teacher.model_kwargs), train=params.teacher.train)
        context.logger.info(f"training the teacher {params.teacher.model} for {params.teacher.train.epochs} epochs")
        if not (context.folder / "teacher" / "metrics.json").is_file():
            train_run(config, resume=context.resume, overwrite=not context.resume)
        teacher_path = context.folder / "teacher" / "best.pt"
        info["teacher_test_top1"] = json.loads((context.folder / "teacher" / "metrics.json").read_text())["test_top1"]
    else:
        teacher_path = context.baseline_checkpoint if params.teacher == "baseline" else Path(params.teacher)
    teacher = load_teacher(teacher_path, tuple(context.contract["shape"][1:]))
    info["teacher"] = str(teacher_path)
    model_spec = None
    if params.student == "scratch":
        model_spec = context.model_spec
    elif isinstance(params.student, StudentModelSpec):
        _, channels, _, _ = context.contract["shape"]
        kwargs = {"num_classes": len(context.contract["classes"]), "in_channels": channels, **params.student.model_kwargs}
        model_spec = {"name": params.student.model, "kwargs": kwargs}
    if model_spec:
        seed_everything(params.train.seed)  # a new student's initial weights are part of the reproducible run
    student = create_model(model_spec["name"], **model_spec["kwargs"]) if model_spec else model
    if model_spec:
        check_fits(student, model_spec["name"], tuple(context.contract["shape"][1:]), len(context.contract["classes"]))
    context.logger.info(f"distilling from {teacher_path} (T={params.temperature}, alpha={params.alpha})")
    fine_tune(student, context.dataset, params.train, context.folder / "student", model_spec or context.model_spec, teacher=teacher,
              distillation=library_config(DistillConfig, params), logger=context.logger, augment=augmentation(context.data_config),
              resume=context.resume)
    return StageOutput(student.eval(), info, model_spec=model_spec)
