"""Did training produce a usable model? The checks that keep a failed run from passing silently.

A run fails when its accuracy is at or near chance, or when its training loss never fell below
ln(classes), the loss of a model that answers every class with the same probability. "At chance" is
a one-sided binomial test: the run fails unless its accuracy is significantly above the chance
level (p < 0.001) and covers at least 5% of the distance from chance to 100% (14.5% for ten
balanced classes, 52.5% for two). The chance level is the share of the most frequent class, so a
model that always answers the majority class of an unbalanced data set fails too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy.stats import binomtest

SIGNIFICANCE = 1e-3
MIN_GAIN_OVER_CHANCE = 0.05
HINT = "lower --lr or use --lr auto, and check that the labels match the images (a first run with --augment none rules out the augmentation)"


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`judge_training`; stored in checkpoints and metrics under ``training``."""

    status: str  # "ok" or "failed"
    reason: str
    split: str
    top1: float
    chance: float
    p_value: float
    images: int

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def as_dict(self) -> dict:
        return asdict(self)


def chance_level(labels: torch.Tensor, num_classes: int) -> float:
    """The accuracy of always answering the most frequent class (1 / classes when they are balanced)."""
    counts = torch.bincount(labels, minlength=num_classes)
    return max(1.0 / num_classes, counts.max().item() / max(1, labels.numel()))


def judge_training(top1: float, labels: torch.Tensor, num_classes: int, split: str, lowest_loss: float | None = None) -> Verdict:
    """Judge a trained model by its top-1 (percent) on ``split`` (whose ``labels`` are given) and, when the
    loss was plain cross-entropy, by the lowest epoch-mean training loss."""
    images = labels.numel()
    chance = chance_level(labels, num_classes)
    correct = int(round(top1 / 100.0 * images))
    p_value = binomtest(correct, images, chance, alternative="greater").pvalue if images else 1.0
    floor = chance + MIN_GAIN_OVER_CHANCE * (1.0 - chance)
    reasons = []
    if p_value >= SIGNIFICANCE or top1 / 100.0 < floor:
        reasons.append(
            f"{split} top-1 {top1:.2f}% on {images} images is at chance ({100 * chance:.1f}% for {num_classes} classes, "
            f"binomial p = {p_value:.2g}; a usable model needs at least {100 * floor:.1f}%)"
        )
    if lowest_loss is not None and not lowest_loss < math.log(num_classes):
        reasons.append(f"the training loss never fell below ln({num_classes}) = {math.log(num_classes):.2f} (lowest {lowest_loss:.2f})")
    return Verdict("failed" if reasons else "ok", "; ".join(reasons), split, top1, chance, float(p_value), images)
