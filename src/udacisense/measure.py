"""Every number a run reports comes from here: model metrics and artifact metrics.

- :func:`model_metrics`: a PyTorch model's test accuracy (per class, confusion), parameters,
  state-dict and gzip size, MACs and per-layer cost.
- :func:`check_artifact`: an exported artifact run in its own runtime on a whole split (accuracy,
  agreement with its source, logit drift, verdict) and timed in a fresh process per thread count.
- :func:`measure_artifact` and :func:`stage_metrics`: the condensed forms the runner's journal keeps.

The runner, the commands (one-stage pipelines), the bundle and the benchmarks all call these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from udacisense.data import ImageDataset
from udacisense.deploy.bench import bench_artifact
from udacisense.deploy.runtime import load_runner, run_batches
from udacisense.deploy.validate import Tolerances, validate_artifact
from udacisense.evaluate import evaluate
from udacisense.profile import count_macs, profile_model


def model_metrics(model: nn.Module, dataset: ImageDataset, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Test-split accuracy and the static profile of ``model`` (latency is timed separately, in a fresh process)."""
    test = evaluate(model, dataset.loader("test", 512), dataset.classes, progress=True)
    profile = profile_model(model, input_shape, runs=0, memory=False, latency=False)
    return {
        "test_top1": test["top1"],
        "per_class_accuracy": test["per_class_accuracy"],
        "confusion_matrix": test["confusion_matrix"],
        "parameters": profile["parameters"]["total"],
        "nonzero_parameters": profile["parameters"]["nonzero"],
        "bytes": profile["size"]["bytes"],
        "gzip_bytes": profile["size"]["gzip_bytes"],
        "macs": profile["macs"],
        "layers": profile["layers"],
    }


def source_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The reference logits an artifact is compared with: ``model`` in eager PyTorch, all cores."""
    return run_batches(load_runner("eager", model=model, threads=None), images).float()


def check_artifact(
    kind: str,
    path: Path,
    input_shape: tuple[int, ...],
    images: torch.Tensor,
    labels: torch.Tensor,
    reference_logits: torch.Tensor,
    *,
    quantized: bool,
    tolerances: Tolerances = Tolerances(),
    classes: Sequence[str] | None = None,
    latency_runs: int = 200,
) -> dict[str, Any]:
    """``{"validation": ..., "latency": ..., "memory": ...}`` of an artifact, each measured in its runtime."""
    runner = load_runner(kind, path, threads=None)
    validation = validate_artifact(runner, images, labels, reference_logits, quantized=quantized, tolerances=tolerances, classes=classes)
    return {"validation": validation, **bench_artifact(kind, path, input_shape, runs=latency_runs)}


def measure_artifact(
    kind: str,
    path: Path,
    input_shape: tuple[int, ...],
    images: torch.Tensor,
    labels: torch.Tensor,
    reference_logits: torch.Tensor,
    classes: Sequence[str] | None = None,
    latency_runs: int = 200,
) -> dict[str, Any]:
    """Size, accuracy and agreement in the artifact's runtime on the whole split, and fresh-process p50 latency."""
    # measured, not judged: agreement is a result to report here, not a pass/fail gate
    checked = check_artifact(kind, path, input_shape, images, labels, reference_logits, quantized=True,
                             tolerances=Tolerances(min_agreement=0.0), classes=classes, latency_runs=latency_runs)
    validation = checked["validation"]
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "top1": validation["top1"],
        "agreement": validation["agreement"],
        **({key: validation[key] for key in ("per_class_accuracy", "confusion_matrix")} if classes is not None else {}),
        "latency_ms": p50(checked),
        "memory": checked["memory"],
    }


def stage_metrics(
    model: nn.Module,
    checkpoint: Path,
    artifacts: dict[str, Path],
    dataset: ImageDataset,
    input_shape: tuple[int, ...],
    latency_runs: int,
    source: nn.Module | None = None,
) -> dict[str, Any]:
    """A stage's model measured on the whole test split: the fp32 checkpoint in eager PyTorch or, when the stage
    built an artifact (e.g. int8), that artifact in its runtime. Latency always comes from a fresh process.

    An artifact's ``agreement`` is with ``model`` (the fp32 model of the stage); when it was converted from another
    model (``source``: QAT's fake-quantized graph), ``conversion_agreement`` and ``source_top1`` compare it with that.
    """
    if not artifacts:
        timing = bench_artifact("checkpoint", checkpoint, input_shape, runs=latency_runs)
        return model_metrics(model, dataset, input_shape) | {"latency_ms": p50(timing), "runtime": "eager"}
    kind, path = next(iter(artifacts.items()))
    images, labels = dataset.whole("test")
    artifact = measure_artifact(kind, path, input_shape, images, labels, source_logits(model, images), list(dataset.classes), latency_runs)
    converted_from = {}
    if source is not None:  # run once more against the converted model: seconds, and validate_artifact stays one-source
        check = validate_artifact(load_runner(kind, path, threads=None), images, labels, source_logits(source, images), quantized=True)
        converted_from = {"conversion_agreement": check["agreement"], "source_top1": check["source_top1"]}
    return {
        "test_top1": artifact["top1"], "per_class_accuracy": artifact["per_class_accuracy"],
        "confusion_matrix": artifact["confusion_matrix"], "agreement": artifact["agreement"], **converted_from,
        "parameters": sum(p.numel() for p in model.parameters()), "bytes": artifact["bytes"], "macs": count_macs(model, input_shape)[0],
        "latency_ms": artifact["latency_ms"], "memory": artifact["memory"], "runtime": kind, "file": artifact["file"],
    }


def p50(timing: dict[str, Any]) -> dict[str, float]:
    """{thread label: median ms} from a :func:`bench_artifact` result."""
    return {label: row["p50_ms"] for label, row in timing["latency"].items()}
