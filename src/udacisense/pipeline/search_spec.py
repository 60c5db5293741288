"""The ``search:`` section of a recipe (and the flags of ``udacisense search``, which carry the same names)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

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


def flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{quantize: {method: [static]}} -> {"quantize.method": ["static"]}: a search space's names are dotted paths."""
    flat: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        flat |= flatten(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return flat


class SearchSpec(StrictModel):
    """A constrained multi-objective search: maximize validation top-1, minimize latency and size of a trial's artifact.

    A trial is a pipeline drawn from the registered stages' own search spaces (:meth:`StageParams.search_space`):
    whether each stage is used (named by the stage: ``prune_channels``), then its parameters (named by their dotted
    path: ``prune_channels.budget.macs``, ``quantize.method``). ``space`` narrows any of them by name: a list of choices,
    ``[low, high]`` for a range, or one value to fix it."""

    budget: float = Field(default=7200, gt=0, description="seconds of search (the command line also takes 90m or 2h); a resume counts on")
    trials: int | None = Field(default=None, gt=0, description="stop after this many trials (proxy and full together)")
    max_drop: float = Field(default=1.0, ge=0, description="constraint: baseline top-1 - artifact top-1 on the validation split, points")
    max_latency_ms: float | None = Field(default=None, gt=0, description="constraint: artifact p50 at batch 1, 1 thread, in its runtime")
    max_size_mb: float | None = Field(default=None, gt=0, description="constraint: artifact file size, MB")
    proxy_epochs: int = Field(default=2, gt=0, description="fine-tune epochs of a first (proxy) trial")
    full_epochs: int = Field(default=10, gt=0, description="fine-tune epochs of a candidate promoted from the proxy front")
    lr: float = Field(default=0.02, gt=0, description="fine-tune peak learning rate (a stage may scale it: QAT uses a tenth)")
    initial_trials: int = Field(default=6, gt=0, description="trials drawn first to spread over the whole space (the hand recipe's own "
                                "point, when given, then a scrambled Halton design); the sampler learns from them")
    promote_every: int = Field(default=6, gt=0, description="proxy trials between promotions")
    promote: int = Field(default=2, gt=0, description="front candidates promoted to the full fine-tune each time")
    seed: int = 0
    storage: str | None = Field(default=None, description="optuna storage URL shared by several workers (postgresql://...); default: SQLite in the run folder")
    latency_runs: int = Field(default=100, gt=0, description="timed runs per latency measurement")
    calibration_images: int = Field(default=512, gt=0)
    stages: list[str] | None = Field(default=None, description="the stages a trial may use (default: every registered stage with a search space)")
    stage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="fixed settings merged into a stage whenever a trial uses it, e.g. {prune_channels: {sensitivity_images: 500}}"
    )
    fine_tune: dict[str, Any] = Field(default_factory=dict, description="fixed training settings of every trial (its fine-tunes and a new "
                                      "student's training), e.g. {batch_size: 64}")
    space: dict[str, Any] = Field(default_factory=dict, description="narrowed dimensions by name, e.g. {quantize.method: [static], "
                                  "prune_channels.budget.macs: [0.2, 0.5], factorize: [false]}")

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("space")
    @classmethod
    def _flat(cls, value: dict[str, Any]) -> dict[str, Any]:
        return flatten(value)

    @model_validator(mode="after")
    def _stage_names(self) -> "SearchSpec":
        from udacisense.stages import STAGES

        named = [*(self.stages or ()), *self.stage_options, *(name.split(".")[0] for name in self.space)]
        for name in named:
            STAGES.get(name, where="search options")
        return self

    @model_validator(mode="after")
    def _fidelities(self) -> "SearchSpec":
        if self.full_epochs < self.proxy_epochs:
            raise ValueError(f"full_epochs ({self.full_epochs}) must be at least proxy_epochs ({self.proxy_epochs})")
        return self
