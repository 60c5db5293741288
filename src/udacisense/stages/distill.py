"""Stage ``distill``: train a student on a teacher's soft targets (Hinton et al., 2015). The student is the
current model, a fresh copy of its architecture (``scratch``) or another architecture (``{model: ...}``);
the teacher is the baseline, the model the previous stage made (``previous``: a cascade of distillations, each
student the next one's teacher), a checkpoint, or a model trained inside the stage. See :mod:`udacisense.distillation`.
The search draws a new student from the registered phone-sized models (:data:`udacisense.models.STUDENTS`)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch.nn as nn
from pydantic import Field, model_validator

from udacisense.config import DistillConfig, SoftTargetConfig, StrictModel, TrainConfig
from udacisense.data import augmentation
from udacisense.stages.registry import SearchDraw, StageContext, StageOutput, StageParams, library_config, register_stage

# A student the search draws trains from scratch, not from trained weights as a fine-tune after a cut does: it gets this
# many times the trial's fine-tune epochs (10 at full fidelity by default: 30 epochs, the baseline's own schedule).
SCRATCH_EPOCHS_PER_FINE_TUNE_EPOCH = 3


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
    teacher: Literal["baseline", "previous"] | Path | TeacherModelSpec | None = Field(
        default=None, description="'baseline', 'previous' (the model the stage before made), a checkpoint path, or {model: ..., train: {...}} to train one here"
    )
    student: Literal["current", "scratch"] | StudentModelSpec = Field(
        default="current", description="current model, scratch (a fresh copy of its architecture) or {model: ..., model_kwargs: {...}}"
    )
    cache_teacher_logits: bool = Field(default=False, description="compute each image's teacher logits once (needs data.augment none)")
    train: TrainConfig = Field(default_factory=TrainConfig)

    search_order: ClassVar[int | None] = 0  # a new student first: pruning and quantization then work on it

    @classmethod
    def search_space(cls, space: SearchDraw) -> None:
        """A new student from the registered phone-sized models, at one of the widths when it has a width multiplier,
        distilled from the baseline (the search's ``stage_options`` may name another teacher) on a from-scratch schedule."""
        from udacisense.models import STUDENT_WIDTHS, STUDENTS

        if STUDENTS[space.choice("student.model", tuple(STUDENTS))]:
            space.choice("student.model_kwargs.width_mult", STUDENT_WIDTHS)
        space.set("teacher", "baseline")
        space.set("train.epochs", space.fine_tune_epochs * SCRATCH_EPOCHS_PER_FINE_TUNE_EPOCH)

    @model_validator(mode="after")
    def _needs_teacher(self) -> "Distill":
        if self.teacher is None:
            raise ValueError("distill needs a teacher: 'baseline', 'previous', a checkpoint path, or {model: mobilenet_v3_large, train: {epochs: 10}}")
        return self

    def must_come_first(self) -> str | None:
        if self.student == "current" or self.teacher == "previous":  # the earlier stages' model is kept, or teaches
            return None
        return "trains a new student from scratch (use 'student: current' to keep the model, or 'teacher: previous' to learn from it)"


def describe(params: Distill, info: dict[str, Any]) -> str:
    student = params.student if isinstance(params.student, str) else f"{params.student.model}{_width(params.student)} from scratch"
    teacher = params.teacher.model if isinstance(params.teacher, TeacherModelSpec) else str(params.teacher)
    return f"student {student}, teacher {teacher}, T={params.temperature}, α={params.alpha}, {params.train.epochs} epochs"


def _width(student: StudentModelSpec) -> str:
    width = student.model_kwargs.get("width_mult")
    return "" if width is None else f" ×{width:g}"


@register_stage("distill", Distill, describe)
def distill_stage(model: nn.Module, params: Distill, context: StageContext) -> StageOutput:
    """Knowledge distillation: train the student (current model, a fresh one, or another architecture) on a teacher's soft targets."""
    from udacisense.models import check_fits, create_model
    from udacisense.train import fine_tune, seed_everything

    info: dict[str, Any] = {}
    teacher = _teacher(model, params.teacher, context, info)
    model_spec = None
    if params.student == "scratch":
        model_spec = context.model_spec
    elif isinstance(params.student, StudentModelSpec):
        _, channels, _, _ = context.contract["shape"]
        kwargs = {"num_classes": len(context.contract["classes"]), "in_channels": channels, **params.student.model_kwargs}
        model_spec = {"name": params.student.model, "kwargs": kwargs}
    if model_spec:
        seed_everything(params.train.seed)  # a new student's initial weights are part of the reproducible run
    student = create_model(model_spec["name"], model_spec.get("source"), **model_spec["kwargs"]) if model_spec else model
    if model_spec:
        check_fits(student, model_spec["name"], tuple(context.contract["shape"][1:]), len(context.contract["classes"]))
    context.logger.info(f"distilling from {info['teacher']} (T={params.temperature}, alpha={params.alpha})")
    history = fine_tune(student, context.dataset, params.train, context.folder / "student", model_spec or context.model_spec, teacher=teacher,
                        distillation=library_config(DistillConfig, params), logger=context.logger, augment=augmentation(context.data_config),
                        resume=context.resume)
    info["history"] = [asdict(row) for row in history]  # what the student's training took (the search's time estimates)
    return StageOutput(student.eval(), info, model_spec=model_spec)


def _teacher(model: nn.Module, teacher: str | Path | TeacherModelSpec, context: StageContext, info: dict[str, Any]) -> nn.Module:
    """The teacher model, with what it is in ``info``: the model as the stage received it (``previous``: loaded from the
    previous stage's checkpoint, so a copy), the baseline, a checkpoint, or a model trained here first (cached)."""
    from udacisense.config import ModelConfig, RunConfig
    from udacisense.distillation import load_teacher
    from udacisense.train import train_run

    if teacher == "previous":
        info["teacher"] = "previous"
        return copy.deepcopy(model)
    if isinstance(teacher, TeacherModelSpec):
        config = RunConfig(name="teacher", runs_dir=context.folder, data=context.data_config,
                           model=ModelConfig(name=teacher.model, kwargs=teacher.model_kwargs), train=teacher.train)
        context.logger.info(f"training the teacher {teacher.model} for {teacher.train.epochs} epochs")
        if not (context.folder / "teacher" / "metrics.json").is_file():
            train_run(config, resume=context.resume, overwrite=not context.resume)
        path = context.folder / "teacher" / "best.pt"
        info["teacher_test_top1"] = json.loads((context.folder / "teacher" / "metrics.json").read_text())["test_top1"]
    else:
        path = context.baseline_checkpoint if teacher == "baseline" else Path(teacher)
    info["teacher"] = str(path)
    return load_teacher(path, tuple(context.contract["shape"][1:]))
