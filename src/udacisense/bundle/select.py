"""Pick the bundle variant that fits this machine's budget, the way an app does on a phone.

Nothing from the bundle is used before it is checked, in this order:

1. The signature. A signed bundle (``manifest.sig``) whose signature does not match its manifest is refused as a whole.
   Without a key, the public key stored in ``manifest.sig`` checks it: that proves the manifest is unchanged since it
   was signed, not who signed it. ``public_key`` (``select --key``) requires a signature by that key, which does. An
   unsigned bundle's manifest is taken as written: its hashes catch files changed after bundling, not a manifest
   rewritten along with them.
2. The files. Before a variant is loaded, each file it uses (its model file and the golden file of its model) must
   have the sha256 the manifest lists; one that differs rejects the variant unrun. The accuracy, validation results
   and golden outputs read from the manifest therefore describe the files that are run.
3. The manifest's verdicts. A variant that cannot run here, or that failed validation when bundled, is never chosen.
4. The golden check. Every remaining variant runs in a fresh process (the benchmark's probe server), as TFLite's
   Acceleration Service runs its candidates out of process: a crash in a runtime rejects that variant instead of
   ending the selection. The process first runs the variant on its golden inputs; outputs that differ from the golden
   file's (a runtime that computes differently here) reject it untimed.

The survivors are timed at batch 1, and the most accurate one whose measured p50 latency (and memory) fits the budget
is chosen. Accuracy comes from the bundle (measured on the whole test split when it was made); latency and memory from
this machine.

Single-model bundles (manifest version 1) are read as one variant per artifact. Those made before the manifest listed
every file have no sha256 for their golden file: only their model files are compared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from udacisense.bundle.signing import MANIFEST_FILE, check_signature
from udacisense.deploy.bench import run_probe
from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS
from udacisense.io import sha256_of


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


def read_manifest(folder: Path, public_key: Path | None = None) -> dict[str, Any]:
    """A bundle's manifest once its signature holds (see :func:`~udacisense.bundle.signing.check_signature`: a signed
    bundle's always, and with ``public_key`` one by that key is required), or one line saying what is wrong."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise UdaciSenseError(f"{folder} is not a bundle (no manifest.json); make one with 'udacisense export' or 'udacisense bundle'")
    data = path.read_bytes()  # read once: the bytes whose signature is checked are the bytes used
    problems = check_signature(folder, public_key, manifest=data)
    if problems:
        raise UdaciSenseError(f"bundle {folder} refused, no variant used: {problems[0]}; use an intact copy of the bundle")
    try:
        return json.loads(data)
    except ValueError as error:
        raise UdaciSenseError(f"{path} is not valid JSON ({error}); make the bundle again") from None


def variant_file_problem(folder: Path, row: dict[str, Any], files: dict[str, str] | None, digests: dict[str, str]) -> str | None:
    """Why a variant's files cannot be used (None: each lies in the bundle and has the sha256 the manifest gives it).

    ``files`` is the manifest's sha256 of every file (None in bundles made before it was written); ``digests`` caches
    the sha256 of files already read, as variants of one model share its golden file."""
    if files is not None and files.get(row["file"], row["sha256"]) != row["sha256"]:
        return f"the manifest gives {row['file']} two sha256 ({row['sha256'][:16]}… and {files[row['file']][:16]}…; a damaged or forged manifest)"
    expected = {row["file"]: row["sha256"], row["golden"]: files.get(row["golden"]) if files is not None else None}
    for name, digest in expected.items():
        path = folder / name
        if not path.resolve().is_relative_to(folder.resolve()):
            return f"{name} lies outside the bundle (a forged manifest?)"
        if not path.is_file():
            return f"{name} is missing"
        if digest is None:
            if files is not None:
                return f"{name} has no sha256 in the manifest (added after bundling?)"
            continue  # a bundle from before the manifest listed every file: its golden file has no sha256 to compare
        if name not in digests:
            digests[name] = sha256_of(path)
        if digests[name] != digest:
            return f"sha256 of {name} is {digests[name][:16]}…, the manifest says {digest[:16]}… (file changed after bundling)"
    return None


def measure_variants(folder: Path, threads: int = 1, warmup: int = 10, runs: int = 50, public_key: Path | None = None) -> list[Measurement]:
    """Check the bundle in ``folder`` (its signature, then each variant's files against the manifest's sha256), then run
    every variant that passed on its golden inputs and time it, each in a fresh process (see the module's docstring)."""
    manifest = read_manifest(folder, public_key)
    shape = tuple(manifest["input"]["shape"])
    files = manifest.get("files")
    digests: dict[str, str] = {}
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
        measurement.problem = variant_file_problem(folder, row, files, digests)
        if measurement.problem:
            continue
        if row["golden"] not in goldens:
            goldens[row["golden"]] = json.loads((folder / row["golden"]).read_text())
        golden = goldens[row["golden"]]
        expected = {"inputs": golden["inputs"], "outputs": golden["outputs"][row["format"]], "atol": manifest["golden"]["atol"]}
        try:
            probe = run_probe(row["format"], folder / row["file"], shape, threads, warmup=warmup, runs=runs, golden=expected)
        except UdaciSenseError as error:  # the runtime crashed or refused the file
            measurement.problem = str(error)
            continue
        measurement.golden_drift = probe["golden"]["max_drift"]
        if not probe["golden"]["passed"]:
            measurement.problem = f"golden check failed: outputs differ by {measurement.golden_drift:.2e} > {expected['atol']:.0e}"
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


def select_variant(folder: Path, latency_ms: float, memory_mb: float | None = None, threads: int = 1, runs: int = 50,
                   public_key: Path | None = None) -> Selection:
    """Check and measure every variant of the bundle on this machine, then choose one for the budget (see :func:`choose`).

    A signed bundle whose signature fails is refused as a whole (:class:`UdaciSenseError`); ``public_key`` requires a
    signature by that key, the only proof of who signed (see the module's docstring)."""
    if not latency_ms > 0:
        raise UdaciSenseError(f"--latency-ms must be a positive number of milliseconds, not {latency_ms}")
    return choose(measure_variants(folder, threads=threads, runs=runs, public_key=public_key), latency_ms, memory_mb, threads)


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
