"""The Python API for notebooks: the commands' work, called with objects.

A compression is dispatched on the type of its parameters, as torchao's ``quantize_(model, Config())`` is::

    import udacisense as us

    model = us.load_checkpoint("runs/baseline/best.pt")
    pruned = us.compress(model, us.PruneChannels(ratio=0.5, fine_tune={"epochs": 2}))
    int8 = us.compress(pruned.model, us.Quantize(method="static"))
    print(int8.metrics["test_top1"], int8.artifacts["pte-int8"])

Each call is the one-stage pipeline its command runs (same runner, checkpoints, measurement, validation and report),
in ``runs/<name>/``, resumed when called again: a re-run notebook cell reuses a finished stage whose parameters did
not change. A model remembers the checkpoint it came from (its data contract, model spec and training data), so a
model from :func:`load_checkpoint` or :func:`compress` needs no data argument.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.io import config_hash
from udacisense.models import create_model
from udacisense.stages import STAGES, StageParams


@dataclass(frozen=True)
class _Origin:
    checkpoint: Path  # the file the model was read from (its weights then, its contract and model spec)
    data: dict[str, Any]  # the data options it was trained or compressed with


# where each model handed out by this API came from, so that it can be compressed further with its own data
_ORIGIN: weakref.WeakKeyDictionary[nn.Module, _Origin] = weakref.WeakKeyDictionary()

__all__ = ["Compressed", "compress", "create_model", "export", "load_checkpoint", "search"]


@dataclass
class Compressed:
    """What :func:`compress` made: the model, its measurements (the stage's metrics on the test split, or the
    validation split when the data says ``evaluate_on: val``), its artifacts and the whole run's result."""

    model: nn.Module
    metrics: dict[str, Any]
    artifacts: dict[str, Path]
    run_dir: Path
    result: dict[str, Any]


def load_checkpoint(path: str | Path) -> nn.Module:
    """The model of a checkpoint written by ``udacisense train`` or any stage, in eval mode."""
    from udacisense.checkpoint import load_model, training_data

    path = _existing(Path(path))
    model, _ = load_model(path)
    _ORIGIN[model] = _Origin(path.resolve(), training_data(path))
    return model.eval()


def compress(model: nn.Module | str | Path, params: StageParams, data: str | dict[str, Any] | None = None, *,
             name: str | None = None, runs_dir: str | Path = "runs", formats: str | list[str] = (), min_agreement: float | None = None) -> Compressed:
    """Run the stage whose parameter type ``params`` is on ``model`` (a model from this API, or a checkpoint path), with
    its data (default: what the model was trained on; options such as ``{"train_subset": 5000}`` change it, a data set
    name replaces it); ``formats`` also exports and validates those artifacts. Every artifact is held to
    ``min_agreement`` (percent top-1 agreement with the model it came from; default 98, the recipes'
    ``export.min_agreement``). Raises :class:`UdaciSenseError` with the command's one-line message on a failure."""
    from udacisense.pipeline.runner import artifact_file

    stage = next((stage for stage in STAGES.values() if type(params) is stage.params), None)
    if stage is None:
        known = ", ".join(stage.params.__name__ for stage in STAGES.values())
        raise UdaciSenseError(f"{type(params).__name__} is no stage's parameters; give one of {known}")
    stages = [{"stage": stage.name, **params.model_dump(mode="json", exclude_defaults=True)}]
    # one folder per stage and parameters: a second call with other parameters does not replace the first one's model
    name = name or f"{stage.name}-{config_hash(stages)[:8]}"
    result, run_dir, used = _run(model, stages, data, name, runs_dir, [formats] if isinstance(formats, str) else list(formats), min_agreement)
    record = result["stages"][-1]
    compressed = load_checkpoint(record["checkpoint"])
    _ORIGIN[compressed] = _Origin(Path(record["checkpoint"]).resolve(), used)
    artifacts = {kind: Path(path) for kind, path in record["artifacts"].items()}
    artifacts |= {kind: artifact_file(run_dir, result, kind) for kind in (result["deploy"] or {}).get("artifacts", {})}
    return Compressed(compressed, record["metrics"], artifacts, run_dir, result)


def export(model: nn.Module | str | Path, formats: str | list[str], data: str | dict[str, Any] | None = None, *,
           name: str = "export", runs_dir: str | Path = "runs", min_agreement: float | None = None) -> dict[str, Any]:
    """Export ``model`` to one format or several (``"pte-int8"``, ``["pte", "onnx"]``), each validated in its own
    runtime against the model and timed there; returns the bundle's manifest (``manifest["artifacts"][kind]`` has the
    file, validation and latency; the files are in ``<runs_dir>/<name>/deploy/``)."""
    kinds = [formats] if isinstance(formats, str) else list(formats)
    result, _, _ = _run(model, [], data, name, runs_dir, kinds, min_agreement)
    return result["deploy"]


def search(model: nn.Module | str | Path, data: str | dict[str, Any] | None = None, *, name: str = "search",
           runs_dir: str | Path = "runs", resume: bool = True, min_agreement: float | None = None, **options: Any) -> dict[str, Any]:
    """``udacisense search`` from ``model``: ``options`` are the search's settings (``budget="10m"``, ``max_drop=1.0``,
    ``max_latency_ms``, ``stages=[...]``, ``space={...}``, ...). Returns what ``pareto.json`` holds (the front, every
    trial, the best point per objective); each front point's recipe is a file ``udacisense run`` reproduces. A trial's
    artifact is held to ``min_agreement`` as :func:`compress` holds it. Called again, it goes on with the same search
    (its budget counts on, as ``--resume`` does); ``resume=False`` starts it afresh."""
    from udacisense.config import validate_config
    from udacisense.pipeline.recipe import validate_recipe
    from udacisense.pipeline.search import Search
    from udacisense.pipeline.search_spec import SearchSpec

    checkpoint = _checkpoint_of(model, Path(runs_dir))
    tolerance = {"min_agreement": min_agreement} if min_agreement is not None else {}
    pipeline = validate_recipe({"name": name, "data": _data_options(model, checkpoint, data), "baseline": {"checkpoint": str(checkpoint)},
                                "stages": [], "export": {"formats": [], **tolerance}})
    spec = validate_config(SearchSpec, options, where="search options")
    return Search(pipeline, spec, Path(runs_dir).resolve(), name, resume=resume, overwrite=not resume).run()


def _run(model: nn.Module | str | Path, stages: list[dict[str, Any]], data: str | dict[str, Any] | None, name: str,
         runs_dir: str | Path, formats: list[str], min_agreement: float | None) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """The one-stage (or export-only) pipeline of a call, resumed in ``runs_dir/name``; failures raise as the commands' do.
    Returns the run's result, its folder and the data options it used."""
    from udacisense.pipeline.recipe import validate_recipe
    from udacisense.pipeline.runner import require_validated_run, run_pipeline

    runs_dir = Path(runs_dir).resolve()  # the timing processes outlive a notebook's change of folder
    checkpoint = _checkpoint_of(model, runs_dir)
    options = _data_options(model, checkpoint, data)
    raw = {"name": name, "data": options, "baseline": {"checkpoint": str(checkpoint)}, "stages": stages,
           "export": {"formats": formats, **({"min_agreement": min_agreement} if min_agreement is not None else {})}}
    result = run_pipeline(validate_recipe(raw), runs_dir, resume=True)
    require_validated_run(result)
    return result, runs_dir / name, options


def _checkpoint_of(model: nn.Module | str | Path, runs_dir: Path) -> Path:
    """A checkpoint holding ``model`` as it is now: its own file when unchanged since it was read, else a new one (named
    by its weights) beside the runs, with the contract and model spec of the checkpoint it came from."""
    from udacisense.checkpoint import load_checkpoint as read_payload
    from udacisense.checkpoint import save_checkpoint, tensors_digest

    if not isinstance(model, nn.Module):
        return _existing(Path(model)).resolve()
    origin = _ORIGIN.get(model)
    if origin is None:
        raise UdaciSenseError("this model has no checkpoint to take its input contract from: train it with 'udacisense train', "
                              "then load it with udacisense.load_checkpoint(path)")
    payload = read_payload(origin.checkpoint)
    state = model.state_dict()
    digest = tensors_digest(state.values())
    if digest == tensors_digest(payload["state_dict"].values()) and list(state) == list(payload["state_dict"]):
        return origin.checkpoint
    path = save_checkpoint(runs_dir / ".models" / f"{digest[:16]}.pt", model, payload["model"], payload["input"]).resolve()
    _ORIGIN[model] = _Origin(path, origin.data)
    return path


def _existing(checkpoint: Path) -> Path:
    if not checkpoint.is_file():
        raise UdaciSenseError(f"checkpoint {checkpoint} does not exist; train one with 'udacisense train'")
    return checkpoint


def _data_options(model: nn.Module | str | Path, checkpoint: Path, data: str | dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's data section: what the model was trained or compressed with, changed by ``data`` options (e.g.
    ``{"train_subset": 5000}``); a data set name alone is another data set."""
    from udacisense.checkpoint import training_data

    if isinstance(data, str):
        return {"name": data}
    own = dict(_ORIGIN[model].data) if isinstance(model, nn.Module) else training_data(checkpoint)
    return own | dict(data or {})
