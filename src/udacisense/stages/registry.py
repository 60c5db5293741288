"""The stage registry: a stage is a parameter model plus a handler, registered once by name.

Shaped like torchao's ``quantize_(model, Config())``: the parameters are a pydantic model, and the
handler registered with it does the work::

    class PruneChannels(StageParams): ...

    @register_stage("prune_channels", PruneChannels, describe=lambda params, info: "...")
    def prune_channels(model, params, context) -> StageOutput: ...

A stage never writes its checkpoint, measures itself or touches the journal: the runner
(:mod:`udacisense.pipeline.runner`) does that for every stage alike, for recipes and commands.
The validator reads what a parameter model declares about ordering (:class:`StageParams`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Protocol, Sequence

import torch
import torch.nn as nn
from pydantic import Field, PositiveFloat, model_validator

from udacisense.config import DataConfig, DistillConfig, SoftTargetConfig, StrictModel, TrainConfig
from udacisense.data import ImageDataset
from udacisense.registry import Registry


class SearchDraw(Protocol):
    """What a stage's :meth:`StageParams.search_space` draws one search trial's parameters from. Names are the
    parameters' dotted paths in the stage (``budget.macs``, ``distill.temperature``); what is drawn or set becomes the
    trial's stage, and the search's ``space:`` overrides narrow any range or list of choices by the same name."""

    fine_tune_epochs: int  # this trial's fidelity: the epochs of a fine-tune after a cut
    lr: float  # the search's fine-tune learning rate

    def float(self, name: str, low: float, high: float) -> float: ...
    def choice(self, name: str, options: Sequence[Any]) -> Any: ...
    def present(self, name: str) -> bool: ...
    def set(self, name: str, value: Any) -> None: ...


class StageParams(StrictModel):
    """Base of every stage's parameters; the methods are what the recipe validator and the search ask of a stage.

    A stage the search may draw sets ``search_order`` and defines the classmethod ``search_space(space: SearchDraw)``,
    which draws its parameters for one trial (only valid combinations: a drawn stage that its own validator rejects
    fails the trial); :func:`register_stage` refuses one without the other.
    """

    # Where the search places this stage in a trial's pipeline (lower first; an artifact-building stage last);
    # None: the search never draws it.
    search_order: ClassVar[int | None] = None

    def builds_artifact(self) -> str | None:
        """The export format this stage produces itself (e.g. an int8 ``.pte``): the model is final after it."""
        return None

    def must_come_first(self) -> str | None:
        """Why this stage discards what earlier stages did (then it must be the first stage), or None."""
        return None


@dataclass
class StageContext:
    """What a stage may use besides the model: data, where to write, the baseline, a logger, and a cache shared by
    the runs of one runs folder for measurements that depend only on their inputs (kept under their inputs' hash)."""

    dataset: ImageDataset
    data_config: DataConfig
    model_spec: dict[str, Any]
    contract: dict[str, Any]
    folder: Path
    baseline_checkpoint: Path
    logger: logging.Logger
    resume: bool = False
    cache_dir: Path | None = None

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(self.contract["shape"])


@dataclass
class StageOutput:
    """The stage's fp32 model, what it did (plans, ranks, histories), any artifact it built, and its
    architecture spec when the stage replaced the model by another architecture (a distilled student)."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    model_spec: dict[str, Any] | None = None
    # the model the artifact was converted from when it is not ``model`` (QAT: the fake-quantized graph); the runner
    # fails the stage when the artifact disagrees with it beyond the recipe's tolerance
    source: nn.Module | None = None


Handler = Callable[[nn.Module, Any, StageContext], StageOutput]
Describe = Callable[[Any, dict[str, Any]], str]


@dataclass(frozen=True)
class Stage:
    """A registered stage: its name, parameter model, handler and one-line report description."""

    name: str
    params: type[StageParams]
    run: Handler
    describe: Describe

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


STAGES: Registry[Stage] = Registry("stage")


def register_stage(name: str, params: type[StageParams], describe: Describe):
    """Register ``handler(model, params, context) -> StageOutput`` as the stage ``name``; names and parameter types are unique."""

    def decorator(handler: Handler) -> Handler:
        if any(stage.params is params for stage in STAGES.values()):
            raise ValueError(f"the parameter model {params.__name__} of stage '{name}' is registered twice")
        if (params.search_order is None) == callable(getattr(params, "search_space", None)):
            raise ValueError(f"stage '{name}': {params.__name__} needs both search_order and a search_space classmethod, or neither")
        STAGES.register(name, Stage(name, params, handler, describe))
        return handler

    return decorator


# --- what several stages share: fine-tuning after a compression step, optionally distilled ------


class FineTuneConfig(TrainConfig):
    """Training after a compression step: gentler defaults than training from scratch."""

    epochs: int = Field(default=5, gt=0, description="fine-tuning epochs after the cut")
    lr: PositiveFloat | Literal["auto"] = Field(default=0.02, description="fine-tuning peak learning rate, or 'auto' for a range test first")
    schedule: Literal["cosine", "onecycle"] = Field(default="cosine", description="learning-rate schedule")


class TeacherConfig(SoftTargetConfig):
    """Distillation while fine-tuning: ``self`` is the model before this stage, ``baseline`` the run's baseline."""

    teacher: Literal["self", "baseline"] | Path = Field(
        default="self", description="distil the fine-tune from: self (the model before this stage), baseline, or a checkpoint"
    )


class FineTuned(StageParams):
    """Optional fine-tuning, optionally distilled, after a compression step."""

    fine_tune: FineTuneConfig | None = None
    distill: TeacherConfig | None = None

    @model_validator(mode="after")
    def _distill_needs_training(self):
        if self.distill is not None and self.fine_tune is None:
            raise ValueError("distill teaches during fine-tuning; add 'fine_tune: {epochs: N}' or remove 'distill'")
        return self


def library_config(config_type: type[StrictModel], params: StrictModel, **changes: Any) -> Any:
    """The technique's own config from a stage's parameters (which extend it with stage-only fields)."""
    fields = params.model_dump(include=set(config_type.model_fields))
    return config_type.model_validate(fields | changes)


def stage_teacher(model: nn.Module, distill: TeacherConfig | None, context: StageContext) -> tuple[nn.Module | None, DistillConfig]:
    """The ``teacher`` and ``distillation`` of :func:`udacisense.train.fine_tune` for a stage's ``distill`` section: a
    copy of ``model`` as it is now (``self``: call this before the stage changes the model), the run's baseline or a
    checkpoint; no teacher without ``distill``."""
    from udacisense.distillation import load_teacher

    if distill is None:
        return None, DistillConfig()
    if distill.teacher == "self":
        teacher = copy.deepcopy(model)
    else:
        path = context.baseline_checkpoint if distill.teacher == "baseline" else Path(distill.teacher)
        teacher = load_teacher(path, tuple(context.contract["shape"][1:]))
    return teacher, library_config(DistillConfig, distill)


def describe_fine_tune(params: FineTuned) -> str:
    """', 2 epochs fine-tuning, teacher self' or ''."""
    if params.fine_tune is None:
        return ""
    teacher = f", teacher {params.distill.teacher}" if params.distill else ""
    return f", {params.fine_tune.epochs} epochs fine-tuning{teacher}"


def draw_fine_tune(space: SearchDraw, lr_scale: float = 1.0, epochs_scale: float = 1.0) -> None:
    """A search trial's fine-tune after a cut (epochs from the trial's fidelity, scaled; the search's learning rate,
    scaled) and whether it is distilled from the model before the stage, at which temperature."""
    space.set("fine_tune.epochs", max(1, round(space.fine_tune_epochs * epochs_scale)))
    space.set("fine_tune.lr", space.lr * lr_scale)
    if space.present("distill"):
        space.set("distill.teacher", "self")
        space.choice("distill.temperature", (2.0, 4.0, 8.0))
