"""What a path given as a model to ship holds: a checkpoint, a bundle, a run folder (its bundle) or a search run (one
bundle per point of its Pareto front). The runner and the search say where their bundles are; nothing else here
knows a run folder's layout."""

from __future__ import annotations

from pathlib import Path

from udacisense.errors import UdaciSenseError
from udacisense.pipeline.runner import deploy_folder
from udacisense.pipeline.search import front_runs


def parse_variant_specs(text: str) -> list[str]:
    """'a.pt,name=runs/x' -> ['a.pt', 'name=runs/x']"""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise UdaciSenseError("--variants is empty; list checkpoints, bundles or run folders, e.g. --variants runs/a/best.pt,runs/b")
    return specs


def variant_models(specs: list[str]) -> list[tuple[str, Path]]:
    """(name, checkpoint or bundle folder) for each ``[name=]path``; a search run gives one per front point, named
    ``<name>-<trial>``; a run folder, its deploy bundle named after the run. An empty name: the bundle's own."""
    models: list[tuple[str, Path]] = []
    for spec in specs:
        name, _, text = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(text)
        points = None if path.is_file() else front_runs(path)
        if points is not None:
            models += [(f"{name or path.name}-{trial}", deploy_folder(run)) for trial, run in points]
        elif not path.is_file() and deploy_folder(path).is_dir():
            models.append((name or path.name, deploy_folder(path)))
        else:
            models.append((name, path))
    return models
