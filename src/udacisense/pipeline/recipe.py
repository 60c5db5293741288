"""Recipes: one YAML file names the data, the baseline model, the stages in order, the export formats
and the targets. ``load_recipe`` validates all of it before anything runs, so a typo costs a second,
not an hour of training.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from udacisense.config import DataConfig, StrictModel, TrainConfig, validate_config
from udacisense.errors import UdaciSenseError

RECIPES_DIR = Path(__file__).resolve().parents[3] / "recipes"


class BaselineSpec(StrictModel):
    """The fp32 model every number is compared with: an existing checkpoint, or a model trained here."""

    checkpoint: Path | None = Field(default=None, description="a udacisense checkpoint; when set, nothing is trained")
    model: str = "mobilenet_v3_small"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


class ExportSpec(StrictModel):
    """Artifacts to ship; the first is the one the targets are checked on."""

    formats: tuple[str, ...] = ("pte-int8", "onnx")
    calibration_images: int = Field(default=256, gt=0, description="int8 calibration images for formats quantized at export")
    min_agreement: float = Field(default=98.0, ge=0, le=100, description="top-1 agreement with the source model, percent")
    latency_runs: int = Field(default=200, gt=0, description="timed runs per latency measurement")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        from udacisense.export import FILE_NAMES

        unknown = [kind for kind in formats if kind not in FILE_NAMES]
        if unknown or not formats:
            raise ValueError(f"unknown or no export formats {unknown}; choose from {', '.join(FILE_NAMES)}")
        if formats[0] == "coreml":
            raise ValueError("the first format is measured against the targets, and Core ML cannot run here; list it later")
        return formats


class Targets(StrictModel):
    """What 'good enough' means, relative to the fp32 baseline (defaults: the original brief)."""

    size_reduction: float = Field(default=0.70, ge=0, lt=1, description="1 - artifact bytes / baseline fp32 state-dict bytes")
    latency_reduction: float = Field(
        default=0.60, ge=0, lt=1, description="1 - artifact p50 / baseline eager PyTorch p50 (batch 1, 1 thread)"
    )
    max_accuracy_drop: float = Field(default=5.0, ge=0, description="baseline top-1 - artifact top-1, points, whole test split")
    runtime_latency_reduction: float | None = Field(
        default=None, ge=0, lt=1, description="also: 1 - artifact p50 / baseline exported to the same format (fair runtime comparison)"
    )


class Recipe(StrictModel):
    """A whole pipeline: ``udacisense run recipe.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run folder name under runs/")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    export: ExportSpec = Field(default_factory=ExportSpec)
    targets: Targets = Field(default_factory=Targets)
    threads: int | None = Field(default=None, gt=0, description="CPU threads for training and measuring (default: all cores)")

    @model_validator(mode="after")
    def _stages_are_mappings(self) -> "Recipe":
        for index, item in enumerate(self.stages, start=1):
            if not isinstance(item, dict) or "stage" not in item:
                raise ValueError(f"stage {index} must be a mapping with a 'stage' key, e.g. '- stage: prune_channels'")
        return self


@dataclass(frozen=True)
class PlannedStage:
    """One validated stage: its position, its folder id, its registered kind and its parameters."""

    index: int
    id: str
    kind: str
    params: StrictModel

    def config(self) -> dict[str, Any]:
        return {"stage": self.kind, **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class Pipeline:
    """A recipe with every stage validated against the stage registry."""

    recipe: Recipe
    stages: tuple[PlannedStage, ...]
    source: Path | None = None


def load_recipe(path_or_name: str | Path, overrides: list[str] = ()) -> Pipeline:
    """Read, override (``--set stage.param=value``) and validate a recipe file or a shipped recipe name."""
    path = resolve_recipe_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UdaciSenseError(f"{path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise UdaciSenseError(f"{path} must hold a mapping with name, data, baseline, stages, export and targets")
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return validate_recipe(raw, source=path)


def resolve_recipe_path(path_or_name: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped recipe (``mobile`` -> recipes/mobile.yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path_or_name}.yaml"
    if shipped.is_file():
        return shipped
    names = [recipe.stem for recipe in sorted(RECIPES_DIR.glob("*.yaml"))]
    raise UdaciSenseError(f"recipe {path_or_name} not found; give a YAML file or one of: {', '.join(names) or 'none shipped'}")


def validate_recipe(raw: dict[str, Any], source: Path | None = None) -> Pipeline:
    """Validate the recipe, each stage's parameters and the order of the stages."""
    from udacisense.pipeline.stages import get_stage

    recipe = validate_config(Recipe, raw, where="recipe")
    planned, seen = [], set()
    for index, item in enumerate(recipe.stages, start=1):
        params = dict(item)
        kind = str(params.pop("stage"))
        stage_id = str(params.pop("id", kind))
        stage = get_stage(kind, where=f"stage {index}")
        if stage_id in seen:
            raise UdaciSenseError(f"invalid recipe: two stages are called '{stage_id}'; give one an 'id: ...' of its own")
        seen.add(stage_id)
        planned.append(PlannedStage(index, stage_id, kind, validate_config(stage.params, params, where=f"stage {index} ({kind})")))
    pipeline = Pipeline(recipe, tuple(planned), source)
    check_stage_order(pipeline)
    check_files(pipeline)
    return pipeline


def check_files(pipeline: Pipeline) -> None:
    """Checkpoints named in the recipe must exist before an hour of work depends on them."""
    named = [("baseline.checkpoint", pipeline.recipe.baseline.checkpoint)]
    for stage in pipeline.stages:
        for owner in (stage.params, getattr(stage.params, "distill", None)):
            teacher = getattr(owner, "teacher", None)
            if isinstance(teacher, Path):
                named.append((f"stage {stage.index} ({stage.kind}) teacher", teacher))
    for what, path in named:
        if path is not None and not Path(path).is_file():
            raise UdaciSenseError(f"{what} {path} does not exist; train it first ('udacisense train') or fix the path")


def check_stage_order(pipeline: Pipeline) -> None:
    """Reject pipelines that cannot work, naming the stages involved."""
    quantized: PlannedStage | None = None
    for stage in pipeline.stages:
        if quantized is not None:
            raise UdaciSenseError(
                f"stage {stage.index} ({stage.kind}) comes after stage {quantized.index} ({quantized.kind}), but an int8 model "
                "cannot be pruned, trained or quantized again; put quantize last"
            )
        if stage.kind == "quantize":
            quantized = stage
        if stage.kind == "distill" and stage.params.student == "scratch" and stage.index != 1:
            raise UdaciSenseError(
                f"stage {stage.index} (distill) trains a new student from scratch, which would discard stages 1-{stage.index - 1}; "
                "make it the first stage or use 'student: current'"
            )
    formats = pipeline.recipe.export.formats
    if quantized is not None and quantized.params.method == "dynamic" and any(kind.endswith("-int8") for kind in formats):
        raise UdaciSenseError(
            "a dynamic-int8 quantize stage ships as TorchScript-lite ('ptl'); drop the -int8 export formats or use method static/qat"
        )
    if quantized is not None and quantized.params.method != "dynamic" and "pte-int8" not in formats:
        raise UdaciSenseError(f"stage {quantized.index} (quantize, {quantized.params.method}) produces an int8 .pte; add 'pte-int8' to export.formats")


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """``prune.ratio=0.4`` (a stage id), ``baseline.train.epochs=3`` or ``targets.max_accuracy_drop=1``."""
    key, sep, text = assignment.partition("=")
    parts = [part for part in key.split(".") if part]
    if not sep or not parts:
        raise UdaciSenseError(f"--set '{assignment}' must look like key=value, e.g. prune.ratio=0.4, baseline.train.epochs=3 or threads=1")
    value = yaml.safe_load(text) if text else None
    stage_ids = {str(item.get("id", item.get("stage"))): item for item in raw.get("stages") or [] if isinstance(item, dict)}
    in_stage = parts[0] in stage_ids and len(parts) > 1
    target: Any = stage_ids[parts[0]] if in_stage else raw
    path = parts[1:] if in_stage else parts
    if target is raw and path[0] not in Recipe.model_fields:
        known = list(Recipe.model_fields) + list(stage_ids)
        guess = difflib.get_close_matches(path[0], known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(known)}"
        raise UdaciSenseError(f"--set '{assignment}': no recipe section or stage id '{path[0]}' ({hint})")
    for part in path[:-1]:
        if not isinstance(target.get(part, {}), dict):
            raise UdaciSenseError(f"--set '{assignment}': '{part}' is not a section")
        target = target.setdefault(part, {})
    target[path[-1]] = value


def config_hash(*parts: Any) -> str:
    """A short, stable fingerprint of JSON-able configuration (stage results are reused while it holds)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_recipes() -> list[tuple[str, str]]:
    """Shipped recipes: (name, first sentence of the description)."""
    rows = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        description = " ".join(str((yaml.safe_load(path.read_text()) or {}).get("description", "")).split())
        rows.append((path.stem, description.split(". ")[0].split("; ")[0]))
    return rows

