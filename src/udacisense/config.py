"""Validated configuration objects. The YAML/CLI options map one-to-one onto these."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator

from udacisense.errors import UdaciSenseError
from udacisense.registry import did_you_mean


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


AugmentOp = Literal["crop", "flip", "erasing"]


class DataConfig(StrictModel):
    """Which images to load and how to present them to the model."""

    name: str = "fashion-mnist"
    root: Path | None = Field(default=None, description="data folder; defaults depend on the data set")
    channels: Literal[1, 3] | None = Field(default=None, description="convert to 1 or 3 channels; None keeps the native count")
    image_size: int | None = Field(default=None, ge=8, le=512, description="resize to this square size; None keeps native")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="part of the training set held out for validation")
    split_seed: int = 0
    train_subset: int | None = Field(default=None, gt=0, description="use only this many training images")
    test_subset: int | None = Field(default=None, gt=0, description="evaluate on only this many test images")
    evaluate_on: Literal["test", "val"] = Field(
        default="test",
        description="the split every measurement uses; a search measures its trials on val and keeps test for the chosen points' report",
    )
    augment: tuple[AugmentOp, ...] | None = Field(
        default=None, description="crop, flip, erasing (or none); None uses the data set's default (flips only where classes look the same mirrored)"
    )

    @field_validator("augment", mode="before")
    @classmethod
    def _read_augment(cls, value: Any) -> Any:
        """'crop,flip' and 'none' as on the command line; true/false as older configs wrote it (true: the default)."""
        if isinstance(value, bool):
            return None if value else ()
        if isinstance(value, str):
            return () if value.strip() == "none" else tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class ModelConfig(StrictModel):
    """A registry name (or ``file.py:callable`` / ``package.module:callable``) plus its keyword arguments."""

    name: str = "mobilenet_v3_small"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(StrictModel):
    """Optimization settings for :func:`udacisense.train.fit`."""

    epochs: int = Field(default=30, gt=0, description="passes over the training images")
    batch_size: int = Field(default=128, gt=0, description="training images per step")
    eval_batch_size: int = Field(default=512, gt=0, description="images per step when measuring")
    optimizer: Literal["sgd", "adamw"] = Field(default="sgd", description="sgd (with momentum) or adamw")
    lr: PositiveFloat | Literal["auto"] = Field(default=0.1, description="peak learning rate, or 'auto' for a short range test before training")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=5e-5, ge=0, description="L2 penalty on the weights")
    schedule: Literal["cosine", "onecycle"] = Field(default="onecycle", description="learning-rate schedule")
    warmup_fraction: float = Field(default=0.15, ge=0, lt=1, description="one-cycle warm-up share of all steps")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="share of each target spread over the other classes")
    grad_clip_norm: float | None = Field(
        default=1.0, gt=0, description="clip the gradients' global L2 norm (why 1.0: docs/benchmarks.md, issue 13); None: no clipping"
    )
    ema_decay: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (e.g. 0.999, reached after a warm-up); it is evaluated and saved as the model",
    )
    seed: int = Field(default=0, description="seed of the initial weights, the data order and the augmentation")
    threads: int | None = Field(default=None, gt=0, description="CPU threads; None uses all cores")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when there is one")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA; ignored on CPU")
    channels_last: bool = Field(
        default=True,
        description="train in the channels-last memory format (oneDNN's depthwise convolutions on x86 CPUs train MobileNetV3 about 2x faster)",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the training step's model (CUDA graphs on CUDA): small models on a GPU are bound by kernel launches",
    )
    sync_batchnorm: bool = Field(
        default=False, description="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of each rank's part"
    )


# How a run executes, not what it trains: a run may resume with other values (a GPU run continued on a CPU).
EXECUTION_FIELDS = ("threads", "device", "amp", "channels_last", "compile", "eval_batch_size", "sync_batchnorm")


class SoftTargetConfig(StrictModel):
    """Hinton's distillation loss: how soft the teacher's answers are (temperature) and how much the student listens
    (alpha). The one declaration of these defaults: the distill stage, a fine-tune's teacher and the command-line help
    all take them from here."""

    temperature: float = Field(default=4.0, gt=0, description="softening temperature T")
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the teacher's soft targets; 1 - alpha weighs the labels")


class DistillConfig(SoftTargetConfig):
    """Knowledge distillation in :func:`udacisense.train.fine_tune`: the soft targets, and whether the teacher's logits
    are remembered per image."""

    cache_teacher_logits: bool = Field(
        default=False, description="remember the teacher's logits per image; only valid when augmentation is off"
    )


class TrackingConfig(StrictModel):
    """Where a run is logged (see :mod:`udacisense.tracking`); ``backend: null`` logs nothing."""

    backend: Literal["mlflow"] | None = Field(default=None, description="mlflow, or null for no tracking")
    uri: str | None = Field(default=None, description="tracking URI; default $MLFLOW_TRACKING_URI, else SQLite in <runs_dir>/mlflow")
    experiment: str = Field(default="udacisense", min_length=1, description="MLflow experiment name")


class RunConfig(StrictModel):
    """Everything `udacisense train` needs: the resolved config saved in each run folder."""

    name: str = "baseline"
    runs_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def validate_config(model_type: type[StrictModel], raw: dict[str, Any], where: str = "config") -> StrictModel:
    """Build ``model_type`` from ``raw``, turning pydantic's report into one readable line per mistake."""
    try:
        return model_type.model_validate(raw)
    except ValidationError as error:
        raise UdaciSenseError(f"invalid {where}: " + "; ".join(_describe(model_type, e) for e in error.errors())) from None


def _describe(model_type: type[BaseModel], error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_fields(model_type, error["loc"][:-1])
        return f"unknown key '{location}' ({did_you_mean(str(error['loc'][-1]), sorted(known))})"
    got = repr(error.get("input"))
    return f"'{location}': {error['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"


def _known_fields(model_type: type[BaseModel], parents: tuple[Any, ...]) -> list[str]:
    current: Any = model_type
    for part in parents:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)
