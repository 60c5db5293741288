"""Evaluation on a whole split: top-1, top-5, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[str],
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``model`` in eval mode over ``batches`` and return accuracy metrics (percentages)."""
    model.eval()
    num_classes = len(classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    total_loss, top5_hits, count = 0.0, 0, 0
    for images, labels in tqdm(batches, desc="evaluate", disable=None if progress else True, leave=False):
        logits = model(images.to(device)).float().cpu()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top5 = logits.topk(min(5, num_classes), dim=1).indices
        top5_hits += (top5 == labels[:, None]).any(dim=1).sum().item()
        confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes**2).view(
            num_classes, num_classes
        )
        count += labels.numel()
    return metrics_from_confusion(confusion, classes) | {
        "top5": 100.0 * top5_hits / max(count, 1),
        "loss": total_loss / max(count, 1),
    }


def metrics_from_confusion(confusion: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Top-1 and per-class accuracy from a (true, predicted) confusion matrix."""
    support = confusion.sum(dim=1)
    correct = confusion.diag()
    per_class = {
        name: (100.0 * correct[i].item() / support[i].item()) if support[i] > 0 else None
        for i, name in enumerate(classes)
    }
    return {
        "top1": 100.0 * correct.sum().item() / max(support.sum().item(), 1),
        "count": int(support.sum().item()),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_on_split(model: nn.Module, contract: dict[str, Any], dataset, split: str, batch_size: int = 512) -> dict[str, Any]:
    """Evaluate on ``dataset``'s ``split`` after checking that its images match the model's input contract."""
    from udacisense.checkpoint import check_input_shape

    check_input_shape(getattr(dataset, split).images[:1].float(), contract)
    return evaluate(model, dataset.loader(split, batch_size), dataset.classes, progress=True)


def format_evaluation(result: dict[str, Any]) -> str:
    """Top-1/top-5/loss and per-class accuracy as console text."""
    lines = [f"top-1 {result['top1']:.2f}%   top-5 {result['top5']:.2f}%   loss {result['loss']:.4f}   ({result['count']} images)"]
    lines += [f"  {name:<16} {accuracy:6.2f}%" for name, accuracy in result["per_class_accuracy"].items() if accuracy is not None]
    return "\n".join(lines)
