"""The deploy bundle: artifacts, manifest.json, golden I/O (:mod:`~udacisense.bundle.golden`) and app snippets
(:mod:`~udacisense.bundle.app_code`); :mod:`~udacisense.bundle.verify` checks one.

``build_bundle`` exports every requested format, runs each artifact in its own runtime on the
whole test split (accuracy, agreement with the source model, logit drift), times it beside eager
PyTorch, and records everything in the manifest. Nothing in the manifest is typed by hand.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from udacisense.bundle.app_code import write_snippets
from udacisense.bundle.golden import GOLDEN_ATOL, GOLDEN_COUNT, golden_outputs, write_golden
from udacisense.bundle.signing import MANIFEST_FILE, bundle_files
from udacisense.bundle.web import write_web_page
from udacisense.checkpoint import load_model
from udacisense.data import dataset_for_contract
from udacisense.deploy.bench import bench_artifact
from udacisense.deploy.validate import Tolerances
from udacisense.errors import ExportFailed
from udacisense.formats import FORMATS
from udacisense.formats.base import describe_not_delegated
from udacisense.formats.web import WEB_SOURCES
from udacisense.io import sha256_of, size_of, write_json
from udacisense.measure import check_artifact, source_logits
from udacisense.profile import machine_info, serialized_size


def build_bundle(
    checkpoint: Path,
    output: Path,
    formats: list[str],
    *,
    calibration_images: int = 256,
    data_root: Path | None = None,
    test_subset: int | None = None,
    data_options: dict[str, Any] | None = None,
    tolerances: Tolerances = Tolerances(),
    latency_runs: int = 200,
    prebuilt: dict[str, tuple[Path, dict[str, Any]]] | None = None,
    log=print,
) -> dict[str, Any]:
    """Export, validate, benchmark and write ``output/`` with manifest.json; returns the manifest.

    ``prebuilt`` maps a format to an artifact made earlier from this checkpoint (e.g. the int8 ``.pte``
    a quantization-aware training stage produced, or a dynamic-int8 ``.ptl``) and the export details
    recorded when it was built: it is copied into the bundle and validated as a quantized model
    instead of being exported again. ``data_options`` are further data fields (a recipe's split, ``evaluate_on``).
    """
    prebuilt = prebuilt or {}
    model, payload = load_model(checkpoint)
    contract = payload["input"]
    dataset = dataset_for_contract(contract, root=data_root, test_subset=test_subset, **(data_options or {}))
    input_shape = tuple(contract["shape"])
    example = torch.zeros(input_shape)
    output.mkdir(parents=True, exist_ok=True)

    def calibration() -> list[torch.Tensor]:
        return dataset.calibration_batches(calibration_images)  # batch 1, the exported graph's shape

    test_images, test_labels = dataset.whole("test")
    reference_logits = source_logits(model, test_images)
    golden_inputs = test_images[:GOLDEN_COUNT]

    artifacts: dict[str, Any] = {}
    export_failures: dict[str, str] = {}
    page = "web" in formats
    exported = [kind for kind in formats if kind != "web"]
    if page and not any(kind in exported for kind in WEB_SOURCES):
        exported.append(WEB_SOURCES[-1])  # the page runs the bundle's ONNX file: without one asked for, the fp32 one
    for kind in tqdm(exported, desc="export", disable=None):
        started = time.perf_counter()
        export_format = FORMATS.get(kind)
        quantized = export_format.quantized or kind in prebuilt
        if kind in prebuilt:
            built, built_info = prebuilt[kind]
            path = output / built.name
            shutil.copyfile(built, path)
            export_info = built_info | {"prebuilt": str(built)}
        else:
            try:
                path, export_info = export_format.export(model, example, output, calibration)
            except ExportFailed as error:  # one converter's gap: the other formats still ship, and the job fails at the end
                export_failures[kind] = str(error)
                log(f"  {kind}: EXPORT FAILED: {error}")
                continue
        entry: dict[str, Any] = {
            "file": path.name,
            "runtime": export_format.runtime.name if export_format.runs_here else f"{kind} (not run here)",
            "quantized": quantized,
            "export": export_info,
            "export_seconds": time.perf_counter() - started,
            "sha256": sha256_of(path),
            "bytes": size_of(path),
        }
        if export_format.runs_here:
            entry |= check_artifact(kind, path, input_shape, test_images, test_labels, reference_logits, quantized=quantized,
                                    tolerances=tolerances, classes=dataset.classes, latency_runs=latency_runs)
            entry["golden_outputs"] = golden_outputs(kind, path, golden_inputs).tolist()
        artifacts[kind] = entry
        log(f"  {kind}: {describe(entry)}")

    eager = bench_artifact("checkpoint", checkpoint, input_shape, runs=latency_runs)
    manifest = {
        "format": "udacisense-bundle",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_of(checkpoint),
            "checkpoint_bytes": checkpoint.stat().st_size,
            "state_dict_bytes": serialized_size(model)["bytes"],
            "model": payload["model"],
            "test_top1": 100.0 * (reference_logits.argmax(1) == test_labels).float().mean().item(),
            "latency": eager["latency"],
        },
        "input": contract,
        "test_images": int(test_labels.numel()),
        "evaluated_on": (data_options or {}).get("evaluate_on", "test"),  # "val" inside a search
        "golden": {"file": "golden.json", "count": GOLDEN_COUNT, "atol": GOLDEN_ATOL},
        "artifacts": artifacts,
        "export_failures": export_failures,  # formats asked for whose converter could not handle the model (one line each)
        "versions": package_versions(),
        "machine": machine_info(),  # where the latencies above were measured, with its ISA flags
    }
    write_golden(output, golden_inputs, test_labels[:GOLDEN_COUNT], reference_logits[:GOLDEN_COUNT], artifacts)
    if page:
        try:
            artifacts["web"] = write_web_page(output, artifacts, contract, golden_inputs, GOLDEN_ATOL)
            log(f"  web: {artifacts['web']['page']} runs {artifacts['web']['model']} in onnxruntime-web; serve it with 'udacisense serve {output}'")
        except ExportFailed as error:
            export_failures["web"] = str(error)
            log(f"  web: EXPORT FAILED: {error}")
    write_snippets(output, manifest)
    for entry in artifacts.values():
        entry.pop("golden_outputs", None)
    manifest["files"] = bundle_files(output)  # what a signature over the manifest vouches for: every other file
    write_json(output / MANIFEST_FILE, manifest)
    return manifest


def retime_bundle(folder: Path, latency_runs: int = 200) -> dict[str, Any]:
    """Time a (version-1) bundle's source checkpoint and every artifact that runs here again, in fresh processes, and
    rewrite its manifest (e.g. on a quiet machine); nothing is exported or validated again. Returns the manifest."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    shape = tuple(manifest["input"]["shape"])
    if Path(manifest["source"]["checkpoint"]).is_file():
        manifest["source"]["latency"] = bench_artifact("checkpoint", Path(manifest["source"]["checkpoint"]), shape, runs=latency_runs)["latency"]
    for kind, entry in manifest["artifacts"].items():
        if "validation" in entry:
            entry |= bench_artifact(kind, folder / entry["file"], shape, runs=latency_runs)
    manifest["machine"] = machine_info()
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def describe(entry: dict[str, Any]) -> str:
    """One line per artifact for the console."""
    if "validation" not in entry:
        return f"{entry['export'].get('status', 'converted')}"
    check = entry["validation"]
    one = entry["latency"]["1_thread"]["p50_ms"]
    verdict = "PASS" if check["passed"] else "FAIL: " + "; ".join(check["failures"])
    outside = describe_not_delegated(entry["export"])
    return (
        f"{entry['bytes'] / 1e6:.2f} MB, top-1 {check['top1']:.2f}%, agreement {check['agreement']:.2f}%, "
        f"max|diff| {check['max_abs_diff']:.1e}, {one:.3f} ms (1 thread) {verdict}" + (f"; {outside}" if outside else "")
    )


def format_table(manifest: dict[str, Any]) -> str:
    """The validation and latency table, eager PyTorch first, with ratios to it."""
    source = manifest["source"]
    eager_ms = source["latency"]["1_thread"]["p50_ms"]
    size = source["state_dict_bytes"]
    rows = [
        f"{'artifact':<11} {'runtime':<17} {'size MB':>8} {'x smaller':>9} {'top-1 %':>8} {'agree %':>8} "
        f"{'max|diff|':>9} {'p50 1T ms':>10} {'x faster':>8} {'p50 allT':>9} {'check':>6}",
        f"{'eager fp32':<11} {'pytorch':<17} {size / 1e6:>8.2f} {1:>9.2f} {source['test_top1']:>8.2f} {100:>8.2f} "
        f"{0:>9.1e} {eager_ms:>10.3f} {1:>8.2f} {list(source['latency'].values())[-1]['p50_ms']:>9.3f} {'':>6}",
    ]
    for kind, entry in manifest["artifacts"].items():
        if "validation" not in entry:
            note = f"page around {entry['runs']}, run in the browser" if "runs" in entry else "converted, not run"
            rows.append(f"{kind:<11} {entry['runtime']:<17} {entry['bytes'] / 1e6:>8.2f} {'':>9} {note}")
            continue
        check, latency = entry["validation"], entry["latency"]
        one = latency["1_thread"]["p50_ms"]
        rows.append(
            f"{kind:<11} {entry['runtime']:<17} {entry['bytes'] / 1e6:>8.2f} {size / entry['bytes']:>9.2f} "
            f"{check['top1']:>8.2f} {check['agreement']:>8.2f} {check['max_abs_diff']:>9.1e} {one:>10.3f} "
            f"{eager_ms / one:>8.2f} {list(latency.values())[-1]['p50_ms']:>9.3f} {'PASS' if check['passed'] else 'FAIL':>6}"
        )
    return "\n".join(rows)


def package_versions() -> dict[str, str]:
    """Versions of the packages that made and ran the artifacts ("not installed" for missing ones)."""
    versions = {}
    for package in ("udacisense", "torch", "executorch", "torchao", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "coremltools"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def remove_bundle(folder: Path) -> None:
    """Delete a previous bundle so stale artifacts never mix with new ones."""
    if (folder / "manifest.json").exists():
        shutil.rmtree(folder)
