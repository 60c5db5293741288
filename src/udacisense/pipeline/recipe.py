"""Recipes: one YAML file names the data, the baseline model, the stages in order, the export formats
and the targets. ``load_recipe`` validates all of it before anything runs, so a typo costs a second,
not an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from udacisense.checkpoint import load_checkpoint
from udacisense.config import DataConfig, StrictModel, TrackingConfig, TrainConfig, validate_config
from udacisense.deploy.validate import Tolerances
from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS
from udacisense.io import parse_yaml, read_yaml
from udacisense.pipeline.search_spec import SearchSpec
from udacisense.registry import did_you_mean
from udacisense.stages import STAGES, StageParams

# Shipped recipes are package data, so an installed wheel finds them as well as a source checkout.
RECIPES = resources.files("udacisense") / "recipes"


class BaselineSpec(StrictModel):
    """The fp32 model every number is compared with: an existing checkpoint, or a model trained here."""

    checkpoint: Path | None = Field(default=None, description="a udacisense checkpoint; when set, nothing is trained")
    model: str = "mobilenet_v3_small"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


class ExportSpec(StrictModel):
    """Artifacts to ship; the first is the one the targets are checked on. No formats: the run ends at the last
    stage's checkpoint (or artifact), with no bundle and no targets (what the compression commands do by default)."""

    formats: tuple[str, ...] = ("pte-int8", "onnx")
    calibration_images: int = Field(default=256, gt=0, description="int8 calibration images for formats quantized at export")
    min_agreement: float = Field(default=Tolerances.min_agreement, ge=0, le=100, description="validation: top-1 agreement of every artifact (stage-built "
                                 "or shipped) with the model it was made from, percent; below it the run fails")
    max_abs_diff: float = Field(default=Tolerances.max_abs_diff_fp32, gt=0, description="validation: largest logit difference of an fp32 artifact from its model")
    latency_runs: int = Field(default=200, gt=0, description="timed runs per latency measurement")
    sign: Path | None = Field(default=None, description="private key (PEM, 'udacisense keygen') that signs the bundle's manifest; "
                              "the key stays out of the bundle")
    references: bool = Field(default=True, description="also export the fp32 baseline to each artifact's format, to compare like "
                             "with like (a search's trials skip it: their objectives need no comparison)")
    variants: tuple[str, ...] = Field(default=(), description="'baseline' and stage ids whose models ship beside the final one in "
                                      "variants/, one bundle of variants in every format (the app picks one per device: 'udacisense select')")

    @field_validator("sign")
    @classmethod
    def _key_exists(cls, key: Path | None) -> Path | None:
        if key is not None and not key.is_file():
            raise ValueError(f"signing key {key} does not exist; make one with 'udacisense keygen {key}'")
        return key

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [kind for kind in formats if kind not in FORMATS]
        if unknown:
            raise ValueError(f"unknown export formats {unknown}; choose from {', '.join(FORMATS)}")
        if formats and not FORMATS[formats[0]].runs_here:
            raise ValueError(f"the first format is measured against the targets, and {FORMATS[formats[0]].title} cannot run here; list it later")
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
    search: SearchSpec | None = Field(default=None, description="settings of 'udacisense search' on this recipe's data and baseline")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="log the run to MLflow: backend: mlflow")

    @model_validator(mode="after")
    def _stages_are_mappings(self) -> "Recipe":
        for index, item in enumerate(self.stages, start=1):
            if not isinstance(item, dict) or "stage" not in item:
                raise ValueError(f"stage {index} must be a mapping with a 'stage' key, see 'udacisense recipes' for the stages")
        if self.targets.runtime_latency_reduction is not None and not self.export.references:
            raise ValueError("targets.runtime_latency_reduction compares with the fp32 baseline in the same runtime: set export.references: true")
        return self


@dataclass(frozen=True)
class PlannedStage:
    """One validated stage: its position, its folder id, its registered kind and its parameters."""

    index: int
    id: str
    kind: str
    params: StageParams

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
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UdaciSenseError(f"{path} must hold a mapping with name, data, baseline, stages, export and targets")
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return validate_recipe(raw, source=path)


def resolve_recipe_path(path_or_name: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped recipe (``mobile`` -> the package's recipes/mobile.yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = {Path(entry.name).stem: entry for entry in _shipped()}
    if str(path_or_name) in shipped:
        with resources.as_file(shipped[str(path_or_name)]) as file:
            return Path(file)
    raise UdaciSenseError(f"recipe {path_or_name} not found; give a YAML file or one of: {', '.join(shipped) or 'none shipped'}")


def _shipped() -> list[Any]:
    return sorted((entry for entry in RECIPES.iterdir() if entry.name.endswith(".yaml")), key=lambda entry: entry.name)


def validate_recipe(raw: dict[str, Any], source: Path | None = None) -> Pipeline:
    """Validate the recipe, each stage's parameters and the order of the stages."""
    recipe = validate_config(Recipe, raw, where="recipe")
    planned, seen = [], set()
    for index, item in enumerate(recipe.stages, start=1):
        params = dict(item)
        kind = str(params.pop("stage"))
        stage_id = str(params.pop("id", kind))
        stage = STAGES.get(kind, where=f"invalid recipe: stage {index}")
        if stage_id in seen:
            raise UdaciSenseError(f"invalid recipe: two stages are called '{stage_id}'; give one an 'id: ...' of its own")
        seen.add(stage_id)
        planned.append(PlannedStage(index, stage_id, kind, validate_config(stage.params, params, where=f"stage {index} ({kind})")))
    unknown = [name for name in recipe.export.variants if name != "baseline" and name not in seen]
    if unknown:
        raise UdaciSenseError(f"invalid recipe: export.variants names {unknown}, which are neither 'baseline' nor stage ids ({', '.join(seen) or 'none'})")
    if recipe.export.variants and not recipe.export.formats:
        raise UdaciSenseError("invalid recipe: export.variants needs export.formats (the formats each variant ships in)")
    pipeline = Pipeline(recipe, tuple(planned), source)
    check_stage_order(pipeline)
    check_files(pipeline)
    return pipeline


def check_files(pipeline: Pipeline) -> None:
    """Files named in the recipe (checkpoints, teachers) must exist before an hour of work depends on them, and the
    baseline must not be a model whose training failed (see :mod:`udacisense.health`)."""
    named = [("baseline.checkpoint", pipeline.recipe.baseline.checkpoint)]
    for stage in pipeline.stages:
        named += [(f"stage {stage.index} ({stage.kind}) {field}", path) for field, path in _paths(stage.params)]
    for what, path in named:
        if path is not None and not Path(path).is_file():
            raise UdaciSenseError(f"{what} {path} does not exist; train it first ('udacisense train') or fix the path")
    baseline = pipeline.recipe.baseline.checkpoint
    verdict = (load_checkpoint(baseline).get("training") or {}) if baseline is not None else {}
    if verdict.get("status") == "failed":
        raise UdaciSenseError(f"baseline.checkpoint {baseline} failed its training check ({verdict['reason']}); "
                              "compressing it would only preserve a useless model: retrain it first (e.g. with --lr auto)")


def _paths(params: BaseModel, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every file path in a parameter model, with its dotted field name."""
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, Path):
            yield prefix + name, value
        elif isinstance(value, BaseModel):
            yield from _paths(value, f"{prefix}{name}.")


def check_stage_order(pipeline: Pipeline) -> None:
    """Reject pipelines that cannot work, from what each stage declares, naming the stages involved."""
    final: PlannedStage | None = None
    for stage in pipeline.stages:
        if final is not None:
            raise UdaciSenseError(
                f"stage {stage.index} ({stage.kind}) comes after stage {final.index} ({final.kind}), which builds the shipped "
                f"{final.params.builds_artifact()} artifact; an int8 or exported model cannot be pruned, trained or quantized again: "
                f"put {final.kind} last"
            )
        reason = stage.params.must_come_first()
        if reason and stage.index != 1:
            raise UdaciSenseError(
                f"stage {stage.index} ({stage.kind}) {reason}, which would discard stages 1-{stage.index - 1}; make it the first stage"
            )
        if stage.params.builds_artifact():
            final = stage
    formats = pipeline.recipe.export.formats
    if final is not None and formats and final.params.builds_artifact() not in formats:
        built = final.params.builds_artifact()
        raise UdaciSenseError(f"stage {final.index} ({final.kind}) produces '{built}' ({FORMATS.get(built).title}); add '{built}' to export.formats")


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """``prune.ratio=0.4`` (a stage id), ``baseline.train.epochs=3`` or ``targets.max_accuracy_drop=1``. Under
    ``search.space`` the rest of the key is one name, as the search names its dimensions: ``search.space.quantize.method``."""
    key, sep, text = assignment.partition("=")
    parts = [part for part in key.split(".") if part]
    if parts[:2] == ["search", "space"] and len(parts) > 3:
        parts = [*parts[:2], ".".join(parts[2:])]
    if not sep or not parts:
        raise UdaciSenseError(f"--set '{assignment}' must look like key=value, e.g. prune.ratio=0.4, baseline.train.epochs=3 or threads=1")
    value = parse_yaml(text, f"--set '{assignment}'") if text else None
    stage_ids = {str(item.get("id", item.get("stage"))): item for item in raw.get("stages") or [] if isinstance(item, dict)}
    in_stage = parts[0] in stage_ids and len(parts) > 1
    target: Any = stage_ids[parts[0]] if in_stage else raw
    path = parts[1:] if in_stage else parts
    if target is raw and path[0] not in Recipe.model_fields:
        known = list(Recipe.model_fields) + list(stage_ids)
        raise UdaciSenseError(f"--set '{assignment}': no recipe section or stage id '{path[0]}' ({did_you_mean(path[0], known)})")
    for part in path[:-1]:
        if not isinstance(target.get(part, {}), dict):
            raise UdaciSenseError(f"--set '{assignment}': '{part}' is not a section")
        target = target.setdefault(part, {})
    target[path[-1]] = value


def list_recipes() -> list[tuple[str, str]]:
    """Shipped recipes: (name, first sentence of the description)."""
    rows = []
    for entry in _shipped():
        description = " ".join(str((yaml.safe_load(entry.read_text()) or {}).get("description", "")).split())
        rows.append((Path(entry.name).stem, description.split(". ")[0].split("; ")[0]))
    return rows

