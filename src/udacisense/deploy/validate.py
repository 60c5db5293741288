"""Validate an artifact in its own runtime against its source model on a whole split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from udacisense.deploy.runtime import run_batches
from udacisense.errors import UdaciSenseError, ValidationFailed
from udacisense.evaluate import metrics_from_confusion
from udacisense.formats import Runner


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail thresholds: top-1 agreement with the source (percent) and fp32 logit drift. The defaults are every
    command's and recipe's (``export.min_agreement``, ``export.max_abs_diff``)."""

    min_agreement: float = 98.0
    max_abs_diff_fp32: float = 1e-3


def validate_artifact(
    runner: Runner,
    images: torch.Tensor,
    labels: torch.Tensor,
    source_logits: torch.Tensor,
    *,
    quantized: bool,
    tolerances: Tolerances = Tolerances(),
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Top-1 of the artifact, agreement with the source's top-1, logit differences and a verdict
    (with ``classes``, also the artifact's per-class accuracy and confusion matrix).

    Quantized artifacts are held to the agreement threshold only: their logits differ from
    fp32 by design, so the fp32 drift bound does not apply.
    """
    logits = run_batches(runner, images).float()
    if logits.shape != source_logits.shape:
        raise UdaciSenseError(
            f"{runner.kind} artifact returns logits of shape {tuple(logits.shape)}, the source model "
            f"{tuple(source_logits.shape)}; re-export it from the same checkpoint"
        )
    predictions = logits.argmax(1)
    difference = (logits - source_logits).abs()
    result = {
        "images": int(labels.numel()),
        "top1": 100.0 * (predictions == labels).float().mean().item(),
        "source_top1": 100.0 * (source_logits.argmax(1) == labels).float().mean().item(),
        "agreement": 100.0 * (predictions == source_logits.argmax(1)).float().mean().item(),
        "max_abs_diff": difference.max().item(),
        "mean_abs_diff": difference.mean().item(),
        "tolerances": asdict(tolerances),
    }
    if classes is not None:
        count = len(classes)
        confusion = torch.bincount(labels * count + predictions, minlength=count * count).view(count, count)
        per_class = metrics_from_confusion(confusion, classes)
        result |= {"per_class_accuracy": per_class["per_class_accuracy"], "confusion_matrix": per_class["confusion_matrix"]}
    failures = []
    if result["agreement"] < tolerances.min_agreement:
        failures.append(f"top-1 agreement {result['agreement']:.2f}% < {tolerances.min_agreement}%")
    if not quantized and result["max_abs_diff"] > tolerances.max_abs_diff_fp32:
        failures.append(f"max |logit diff| {result['max_abs_diff']:.2e} > {tolerances.max_abs_diff_fp32:.0e}")
    return result | {"passed": not failures, "failures": failures}


def validation_failures(manifest: dict[str, Any]) -> list[str]:
    """One line per artifact of a bundle's manifest that failed validation, naming it and the check it failed
    (single-model bundles list ``artifacts``; variant bundles, ``variants``)."""
    if "variants" in manifest:
        return [f"variant {row['id']} ({row['file']}): {'; '.join(row['validation_failures'])}"
                for row in manifest["variants"] if row.get("validation_failures")]
    failed = [f"{kind} ({entry['file']}): {'; '.join(entry['validation']['failures'])}"
              for kind, entry in manifest["artifacts"].items() if not entry.get("validation", {"passed": True})["passed"]]
    return failed + [f"{kind}: not exported: {message}" for kind, message in manifest.get("export_failures", {}).items()]


def require_validated(failures: list[str], where: str) -> None:
    """Raise :class:`ValidationFailed` on one line naming every artifact that failed its check (``failures``, e.g. from
    :func:`validation_failures`) and ``where`` it and everything else written are; nothing when the list is empty."""
    if failures:
        raise ValidationFailed(f"{'; '.join(failures)} ({where})")
