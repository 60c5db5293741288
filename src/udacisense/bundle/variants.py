"""Bundles of several model variants (manifest version 2), for apps that pick a model per device.

A variant is one model in one format: e.g. the accurate pruned fp32 model as an XNNPACK ``.pte``, its int8 version,
a smaller int8 model. Each model gets a complete single-model bundle in its own folder (exported, validated on the
whole test split and timed by :func:`~udacisense.bundle.build.build_bundle`, golden outputs included); the top
``manifest.json`` lists every variant in order of preference (accuracy first) with its measured numbers, the machine
and its ISA flags, and the sha256 of every file below it, so one signature covers all variants.

Sources: a checkpoint (exported to every requested format), or a bundle, a run folder or a search run (its Pareto
front), whose int8 artifacts are taken as built (e.g. by quantization-aware training); their fp32 formats are
exported again from the source checkpoint.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from udacisense.bundle.app_code import write_selectors
from udacisense.bundle.build import build_bundle, package_versions, remove_bundle, retime_bundle
from udacisense.bundle.select import Measurement, Selection, choose, format_selection, measure_variants, rank_variants, variant_row
from udacisense.bundle.signing import MANIFEST_FILE, bundle_files
from udacisense.errors import UdaciSenseError
from udacisense.io import atomic_write, write_json
from udacisense.profile import machine_info


@dataclass(frozen=True)
class VariantSource:
    """A model to ship: its checkpoint, int8 artifacts already built from it, and the name its variants carry."""

    name: str
    checkpoint: Path
    prebuilt: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)


def resolve_sources(models: list[tuple[str, Path]]) -> list[VariantSource]:
    """(name, path) per model, the path a checkpoint or a single-model bundle folder (a run folder or a search run is
    resolved to its bundles first: :func:`udacisense.pipeline.sources.variant_models`). An empty name is the file's
    folder, or the bundle's; names are made unique."""
    sources: list[VariantSource] = []
    for name, path in models:
        if path.is_file():
            sources.append(VariantSource(name or _default_name(path), path))
        elif (path / MANIFEST_FILE).is_file():
            sources.append(_from_bundle(path, name or path.parent.name))
        else:
            raise UdaciSenseError(f"variant {name or path}: {path} is not a checkpoint, a bundle, a run folder or a search run")
    taken: list[str] = []
    return [VariantSource(_safe_name(source.name, taken), source.checkpoint, source.prebuilt) for source in sources]


def _from_bundle(folder: Path, name: str) -> VariantSource:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if manifest.get("version", 1) >= 2:
        raise UdaciSenseError(f"{folder} is already a bundle of variants; list its models' checkpoints or run folders instead")
    checkpoint = Path(manifest["source"]["checkpoint"])
    if not checkpoint.is_file():
        raise UdaciSenseError(f"{folder} was made from {checkpoint}, which is gone; give that model's checkpoint instead")
    # int8 artifacts cannot be made again from the checkpoint (their calibration or training is in them): take them as built
    prebuilt = {kind: (folder / entry["file"], entry["export"]) for kind, entry in manifest["artifacts"].items()
                if entry.get("quantized") and "page" not in entry}  # a web page is made again around the int8 file, when asked for
    return VariantSource(name, checkpoint, prebuilt)


def _default_name(checkpoint: Path) -> str:
    return checkpoint.parent.name if checkpoint.stem in ("model", "best", "last") else checkpoint.stem


def _safe_name(name: str, taken: list[str]) -> str:
    """A folder name: letters, digits, '-', '_' and '.', unique among the names before it."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    candidate, count = base, 1
    while candidate in taken:
        count += 1
        candidate = f"{base}-{count}"
    taken.append(candidate)
    return candidate


def build_variant_bundle(
    sources: list[VariantSource],
    output: Path,
    formats: list[str],
    *,
    latency_runs: int = 200,
    log=print,
    **bundle_options: Any,
) -> dict[str, Any]:
    """Export, validate and time every source in every format into ``output/<name>/``; write the version-2 manifest,
    the app selectors (Java, Kotlin, Swift) and ``report.md`` with the selection at three budgets on this machine."""
    if not sources:
        raise UdaciSenseError("no variants given; pass --variants with at least one checkpoint, bundle or run folder")
    remove_bundle(output)
    output.mkdir(parents=True, exist_ok=True)
    models, rows, contract = {}, [], None
    for source in sources:
        kinds = [*dict.fromkeys([*formats, *source.prebuilt])]  # a source's int8 artifacts ship even when not asked for
        log(f"variant model {source.name}: {source.checkpoint} as {', '.join(kinds)}")
        manifest = build_bundle(source.checkpoint, output / source.name, kinds, latency_runs=latency_runs, prebuilt=source.prebuilt,
                                log=log, **bundle_options)
        shared = {key: value for key, value in manifest["input"].items() if key not in ("mean", "std")}
        if contract is None:
            contract = shared
        elif shared != contract:
            raise UdaciSenseError(f"{source.name} takes a different input shape or predicts different classes than {sources[0].name}; "
                                  "one bundle's variants must be interchangeable")
        models[source.name] = {key: manifest["source"][key] for key in ("checkpoint", "checkpoint_sha256", "model", "test_top1", "latency")}
        models[source.name] |= {"input": manifest["input"], "folder": source.name, "evaluated_on": manifest["evaluated_on"], "test_images": manifest["test_images"]}
        rows += [variant_row(f"{source.name}/{kind}", kind, entry, model=source.name, folder=source.name)
                 for kind, entry in manifest["artifacts"].items()]
    manifest = {
        "format": "udacisense-bundle",
        "version": 2,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": contract,  # shared by every model; each model's normalization (mean, std) is in "models"
        "golden": {"count": manifest["golden"]["count"], "atol": manifest["golden"]["atol"]},  # each model's golden.json is in its folder
        "models": models,
        "preference": "most accurate first (top-1 on the whole test split), then faster at 1 thread, then smaller",
        "versions": package_versions(),
    }
    return _write_ranked(output, manifest, rows, latency_runs)


def retime_variant_bundle(output: Path, latency_runs: int = 200, log=print) -> dict[str, Any]:
    """Time every variant of a version-2 bundle again, in fresh processes (e.g. on a quiet machine): each model's
    manifest, the order of preference, the selectors, ``report.md`` and the file list are rewritten; nothing is
    exported or validated again. Returns the new manifest (sign it again: its signature no longer holds)."""
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    rows = []
    for name, model in manifest["models"].items():
        log(f"re-timing variant model {name}")
        bundle = retime_bundle(output / model["folder"], latency_runs)
        model["latency"] = bundle["source"]["latency"]
        rows += [variant_row(f"{name}/{kind}", kind, entry, model=name, folder=model["folder"]) for kind, entry in bundle["artifacts"].items()]
    return _write_ranked(output, manifest, rows, latency_runs)


def _write_ranked(output: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], latency_runs: int) -> dict[str, Any]:
    """The top manifest with ``rows`` in order of preference and this machine, the app selectors, ``report.md`` (with
    the selection at three budgets, measured here) and the list of every file's sha256."""
    manifest = {key: value for key, value in manifest.items() if key != "files"} | {"variants": rank_variants(rows)}
    manifest["machine"] = machine_info()  # where every latency above was measured, with its ISA flags
    write_json(output / MANIFEST_FILE, manifest)  # the selector reads it; rewritten below with the file list
    write_selectors(output, manifest)
    report = variants_report(manifest, selections_at_three_budgets(output, latency_runs=min(latency_runs, 50)))
    atomic_write(output / "report.md", lambda handle: handle.write(report.encode()))
    manifest["files"] = bundle_files(output)
    write_json(output / MANIFEST_FILE, manifest)
    return manifest


def format_variants(manifest: dict[str, Any]) -> str:
    """The variants table: one row per variant in order of preference, with this machine's ISA flags."""
    machine = manifest["machine"]
    threads = max((key for row in manifest["variants"] if row["latency"] for key in row["latency"]), key=lambda key: int(key.split("_")[0]))
    lines = [
        f"measured on {machine['cpu']} ({machine['cores']} cores; ISA {', '.join(machine['isa']) or 'none of avx2/avx512/vnni'})",
        f"{'#':>2} {'variant':<28} {'backend':<16} {'dtype':<5} {'MB':>6} {'top-1 %':>8} {'agree %':>8} "
        f"{'p50 1T':>7} {'p90 1T':>7} {'p50 ' + threads.split('_')[0] + 'T':>7} {'mem MB':>7} {'check':>5}",
    ]
    for row in manifest["variants"]:
        if not row["runs_here"]:
            where = "runs in a browser" if row["format"] == "web" else "cannot run here"
            lines.append(f"{row['preference']:>2} {row['id']:<28} {row['backend']:<16} {row['dtype']:<5} {row['bytes'] / 1e6:>6.2f}  ({where})")
            continue
        one, many = row["latency"]["1_thread"], row["latency"].get(threads, row["latency"]["1_thread"])
        lines.append(f"{row['preference']:>2} {row['id']:<28} {row['backend']:<16} {row['dtype']:<5} {row['bytes'] / 1e6:>6.2f} "
                     f"{row['top1']:>8.2f} {row['agreement']:>8.2f} {one['p50_ms']:>7.3f} {one['p90_ms']:>7.3f} {many['p50_ms']:>7.3f} "
                     f"{row['memory_mb']:>7.2f} {'FAIL' if row['validation_failures'] else 'PASS':>5}")
    return "\n".join(lines)


def three_budgets(measurements: list[Measurement]) -> dict[str, float]:
    """Budgets from measured 1-thread p50s: 10x the slowest (every variant fits), the geometric mean of the fastest and
    the next (only the fastest fits, as measured) and a tenth of the fastest (none fits)."""
    timed = sorted(measurement.p50_ms for measurement in measurements if measurement.p50_ms is not None)
    if not timed:
        return {}
    tight = (timed[0] * timed[1]) ** 0.5 if len(timed) > 1 else 1.5 * timed[0]
    return {"generous": 10 * timed[-1], "tight": tight, "impossible": 0.1 * timed[0]}


def selections_at_three_budgets(folder: Path, latency_runs: int = 50) -> dict[str, Selection]:
    """What ``udacisense select`` picks on this machine at :func:`three_budgets` (every variant measured once)."""
    measurements = measure_variants(folder, runs=latency_runs)
    return {label: choose(measurements, budget) for label, budget in three_budgets(measurements).items()}


def variants_report(manifest: dict[str, Any], selections: dict[str, Selection]) -> str:
    """``report.md``: the variants table and what the selector picks on this machine at three budgets."""
    sections = ["# Model variants", "", f"{len(manifest['variants'])} variants of {len(manifest['models'])} model(s); "
                f"latency at batch 1 in each artifact's runtime, fresh process each; accuracy on the whole test split.", "",
                "```", format_variants(manifest), "```", "",
                "## The selector on this machine", "",
                "`udacisense select` measures every variant again (golden check first, then timed), then picks the most accurate "
                "variant within the budget. Three budgets from those measurements: 10x the slowest p50, the geometric mean of the two "
                "fastest, a tenth of the fastest.", ""]
    for label, selection in selections.items():
        sections += [f"### {label}: p50 <= {selection.latency_ms:.3f} ms", "", "```", format_selection(selection), "```", ""]
    return "\n".join(sections)


