"""The ``search:`` section of a recipe (and the flags of ``udacisense search``, which carry the same names)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from udacisense.compress.channels import Importance
from udacisense.compress.quantize import Observer
from udacisense.config import StrictModel

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from 5400, '5400', '90m', '1.5h' or '45s'."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. 2h, 90m or 600s")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class SearchSpace(StrictModel):
    """What a trial may choose. A range is [low, high]; a tuple of choices is searched among its items."""

    prune: tuple[bool, ...] = Field(default=(True, False), description="whether to remove channels at all")
    macs: tuple[float, float] = Field(default=(0.15, 0.8), description="share of the baseline's MACs the pruning plan keeps")
    params: tuple[float, float] = Field(default=(0.1, 0.8), description="share of the baseline's parameters the pruning plan keeps")
    importance: tuple[Importance, ...] = ("l2", "taylor")
    quantization: tuple[Literal["static", "qat"], ...] = ("static", "qat")
    observer: tuple[Observer, ...] = ("histogram", "minmax")
    mixed_precision: tuple[float, ...] = Field(
        default=(), description="static int8: choices of a validation drop (pt) within which sensitive layers stay fp32; empty: never"
    )
    distill: tuple[bool, ...] = (True, False)
    temperature: tuple[float, ...] = (2.0, 4.0, 8.0)

    @field_validator("macs", "params")
    @classmethod
    def _share_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"{list(value)} must be [low, high] with 0 < low <= high <= 1")
        return value


class SearchSpec(StrictModel):
    """A constrained multi-objective search: maximize validation top-1, minimize latency and size of the int8 ``.pte``."""

    budget: float = Field(default=7200, gt=0, description="seconds of search (the command line also takes 90m or 2h); a resume counts on")
    trials: int | None = Field(default=None, gt=0, description="stop after this many trials (proxy and full together)")
    max_drop: float = Field(default=1.0, ge=0, description="constraint: baseline top-1 - artifact top-1 on the validation split, points")
    max_latency_ms: float | None = Field(default=None, gt=0, description="constraint: artifact p50 at batch 1, 1 thread, in its runtime")
    max_size_mb: float | None = Field(default=None, gt=0, description="constraint: artifact file size, MB")
    proxy_epochs: int = Field(default=2, gt=0, description="fine-tune epochs of a first (proxy) trial")
    full_epochs: int = Field(default=10, gt=0, description="fine-tune epochs of a candidate promoted from the proxy front")
    qat_epochs: tuple[int, int] = Field(default=(1, 2), description="quantization-aware training epochs at proxy and at full fidelity")
    lr: float = Field(default=0.02, gt=0, description="fine-tune peak learning rate (QAT uses a tenth)")
    promote_every: int = Field(default=6, gt=0, description="proxy trials between promotions")
    promote: int = Field(default=2, gt=0, description="front candidates promoted to the full fine-tune each time")
    seed: int = 0
    storage: str | None = Field(default=None, description="optuna storage URL shared by several workers (postgresql://...); default: SQLite in the run folder")
    latency_runs: int = Field(default=100, gt=0, description="timed runs per latency measurement")
    calibration_images: int = Field(default=512, gt=0)
    stage_options: dict[Literal["prune", "quantize"], dict[str, Any]] = Field(
        default_factory=dict, description="fixed settings merged into every trial's stage, e.g. {prune: {sensitivity_images: 500}}"
    )
    fine_tune: dict[str, Any] = Field(default_factory=dict, description="fixed fine-tune settings for every trial, e.g. {batch_size: 64}")
    space: SearchSpace = Field(default_factory=SearchSpace)

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _fidelities(self) -> "SearchSpec":
        if self.full_epochs < self.proxy_epochs:
            raise ValueError(f"full_epochs ({self.full_epochs}) must be at least proxy_epochs ({self.proxy_epochs})")
        return self
