"""Pick the bundle variant that fits this machine's budget, the way an app does on a phone.

Every candidate runs in a fresh process (the benchmark's probe server), as TFLite's Acceleration Service runs its
candidates out of process: a crash in a runtime rejects that variant instead of ending the selection. The process
first runs the variant on its golden inputs; a variant whose outputs differ from the manifest's (an altered or
damaged file, a runtime that computes differently here) is rejected and never timed. The survivors are timed at
batch 1, and the most accurate one whose measured p50 latency (and memory) fits the budget is chosen. Accuracy
comes from the bundle (measured on the whole test split when it was made); latency and memory from this machine.

Single-model bundles (manifest version 1) are read as one variant per artifact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from udacisense.deploy.bench import run_probe
from udacisense.errors import UdaciSenseError
from udacisense.export import FORMATS


def variant_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's variants in order of preference; a version-1 bundle's artifacts become one variant each."""
    if manifest.get("version", 1) >= 2:
        return manifest["variants"]
    rows = [variant_row(kind, kind, entry, model=None, folder="") for kind, entry in manifest["artifacts"].items()]
    return rank_variants(rows)


def variant_row(variant_id: str, kind: str, entry: dict[str, Any], model: str | None, folder: str) -> dict[str, Any]:
    """One variant of a bundle from an artifact's manifest entry; ``folder`` is where its model's files are, in the bundle."""
    export_format = FORMATS.get(kind)
    runs = "validation" in entry
    prefix = f"{folder}/" if folder else ""
    return {
        "id": variant_id,
        "model": model,
        "format": kind,
        "backend": export_format.backend if export_format else "unknown",
        "dtype": "int8" if entry.get("quantized") else "fp32",
        "file": prefix + entry["file"],
        "sha256": entry["sha256"],
        "bytes": entry["bytes"],
        "top1": entry["validation"]["top1"] if runs else None,
        "agreement": entry["validation"]["agreement"] if runs else None,
        "latency": {threads: {key: timing[key] for key in ("p50_ms", "p90_ms")} for threads, timing in entry["latency"].items()} if runs else None,
        "memory_mb": entry["memory"]["model_bytes"] / 1e6 if runs else None,  # what loading and running the model added
        "peak_rss_mb": entry["memory"]["peak_rss_bytes"] / 1e6 if runs else None,  # the whole process, runtime included
        "golden": prefix + "golden.json",
        "runs_here": runs,
        "validation_failures": entry["validation"]["failures"] if runs else [],
    }


def rank_variants(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy first, then 1-thread latency, then size; variants that could not run here come last. Sets ``preference``."""
    def key(row: dict[str, Any]) -> tuple:
        if not row["runs_here"]:
            return (1, 0.0, 0.0, row["bytes"])
        return (0, -round(row["top1"], 2), row["latency"]["1_thread"]["p50_ms"], row["bytes"])

    ranked = sorted(rows, key=key)
    for preference, row in enumerate(ranked, start=1):
        row["preference"] = preference
    return ranked


@dataclass
class Measurement:
    """One variant on this machine: its golden check, latency and memory, or why it cannot be used at any budget."""

    id: str
    format: str
    top1: float | None
    p50_ms: float | None = None
    p90_ms: float | None = None
    memory_mb: float | None = None
    golden_drift: float | None = None
    problem: str | None = None


@dataclass
class Selection:
    """The chosen variant (None: nothing fits) and a reason for every variant not chosen."""

    chosen: Measurement | None
    reasons: dict[str, str]
    measurements: list[Measurement]
    latency_ms: float
    memory_mb: float | None
    threads: int

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.id if self.chosen else None,
            "budget": {"latency_ms": self.latency_ms, "memory_mb": self.memory_mb, "threads": self.threads},
            "reasons": self.reasons,
            "measurements": [asdict(measurement) for measurement in self.measurements],
        }


def read_manifest(folder: Path) -> dict[str, Any]:
    """A bundle's manifest, or one line saying how to make one."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise UdaciSenseError(f"{folder} is not a bundle (no manifest.json); make one with 'udacisense export' or 'udacisense bundle'")
    return json.loads(path.read_text())


def measure_variants(folder: Path, threads: int = 1, warmup: int = 10, runs: int = 50) -> list[Measurement]:
    """Golden check, then latency and memory of every variant of the bundle in ``folder``, each in a fresh process."""
    manifest = read_manifest(folder)
    shape = tuple(manifest["input"]["shape"])
    goldens: dict[str, dict[str, Any]] = {}
    measurements = []
    for row in variant_rows(manifest):
        measurement = Measurement(row["id"], row["format"], row["top1"])
        measurements.append(measurement)
        if not row["runs_here"]:
            measurement.problem = f"{row['format']} cannot run on this machine"
            continue
        if row["validation_failures"]:
            measurement.problem = f"failed validation when bundled: {'; '.join(row['validation_failures'])}"
            continue
        path = folder / row["file"]
        if not path.resolve().is_relative_to(folder.resolve()) or not (folder / row["golden"]).resolve().is_relative_to(folder.resolve()):
            measurement.problem = f"{row['file']} lies outside the bundle (a forged manifest?)"
            continue
        if not path.is_file():
            measurement.problem = f"{row['file']} is missing"
            continue
        if row["golden"] not in goldens:
            goldens[row["golden"]] = json.loads((folder / row["golden"]).read_text())
        golden = goldens[row["golden"]]
        expected = {"inputs": golden["inputs"], "outputs": golden["outputs"][row["format"]], "atol": manifest["golden"]["atol"]}
        try:
            probe = run_probe(row["format"], path, shape, threads, warmup=warmup, runs=runs, golden=expected)
        except UdaciSenseError as error:  # the runtime crashed or refused the file
            measurement.problem = str(error)
            continue
        measurement.golden_drift = probe["golden"]["max_drift"]
        if not probe["golden"]["passed"]:
            measurement.problem = f"golden check failed: outputs differ by {measurement.golden_drift:.2e} > {expected['atol']:.0e} (altered or damaged file)"
            continue
        measurement.p50_ms, measurement.p90_ms = probe["latency"]["p50_ms"], probe["latency"]["p90_ms"]
        measurement.memory_mb = probe["memory"]["model_bytes"] / 1e6
    return measurements


def choose(measurements: list[Measurement], latency_ms: float, memory_mb: float | None = None, threads: int = 1) -> Selection:
    """The first usable variant in order of preference (most accurate first) whose p50 and memory fit the budget."""
    chosen, reasons = None, {}
    for measurement in measurements:
        if measurement.problem:
            reasons[measurement.id] = measurement.problem
        elif measurement.p50_ms > latency_ms:
            reasons[measurement.id] = f"too slow: p50 {measurement.p50_ms:.3f} ms > {latency_ms:.3f} ms"
        elif memory_mb is not None and measurement.memory_mb > memory_mb:
            reasons[measurement.id] = f"too much memory: {measurement.memory_mb:.2f} MB > {memory_mb:.2f} MB"
        elif chosen is None:
            chosen = measurement
        elif _top1(measurement) == _top1(chosen):
            reasons[measurement.id] = f"fits, but {chosen.id} is as accurate ({_top1(chosen)}) and ranked first (faster when bundled)"
        else:
            reasons[measurement.id] = f"fits, but less accurate than {chosen.id} ({_top1(measurement)} vs {_top1(chosen)})"
    return Selection(chosen, reasons, measurements, latency_ms, memory_mb, threads)


def select_variant(folder: Path, latency_ms: float, memory_mb: float | None = None, threads: int = 1, runs: int = 50) -> Selection:
    """Measure every variant of the bundle on this machine and choose one for the budget (see :func:`choose`)."""
    if not latency_ms > 0:
        raise UdaciSenseError(f"--latency-ms must be a positive number of milliseconds, not {latency_ms}")
    return choose(measure_variants(folder, threads=threads, runs=runs), latency_ms, memory_mb, threads)


def format_selection(selection: Selection) -> str:
    """The measurements and the decision, one line per variant, for the console and reports."""
    budget = f"p50 <= {selection.latency_ms:.3f} ms at {selection.threads} thread(s)" + (
        f", memory <= {selection.memory_mb:.2f} MB" if selection.memory_mb is not None else "")
    lines = [f"{'variant':<28} {'top-1 %':>8} {'p50 ms':>8} {'p90 ms':>8} {'mem MB':>7}  decision"]
    for measurement in selection.measurements:
        decision = "CHOSEN" if selection.chosen is measurement else selection.reasons[measurement.id]
        lines.append(f"{measurement.id:<28} {_top1(measurement):>8} {_number(measurement.p50_ms):>8} {_number(measurement.p90_ms):>8} "
                     f"{_number(measurement.memory_mb, 2):>7}  {decision}")
    if selection.chosen is None:
        timed = ", ".join(f"{m.id} {m.p50_ms:.3f} ms" for m in selection.measurements if m.p50_ms is not None) or "none could run"
        lines.append(f"NO VARIANT FITS {budget}; measured p50: {timed}")
    else:
        lines.append(f"chosen: {selection.chosen.id} ({budget})")
    return "\n".join(lines)


def _top1(measurement: Measurement) -> str:
    return f"{measurement.top1:.2f}%" if measurement.top1 is not None else "n/a"


def _number(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"
