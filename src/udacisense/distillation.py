"""Knowledge distillation (Hinton et al., 2015): a frozen teacher's softened outputs train a student.

The loss is ``alpha * KL(teacher_T || student_T) * T**2 + (1 - alpha) * CE(student, labels)``;
the ``T**2`` keeps the soft term's gradients on the same scale as the hard term's for any T.
:func:`udacisense.train.fine_tune` trains with it whenever it is given a teacher: the distill stage's
student, and a pruned, factorized or quantization-aware model with its dense self as the teacher.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from udacisense.checkpoint import load_model
from udacisense.config import DistillConfig
from udacisense.errors import UdaciSenseError


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton's loss: softened KL divergence times T², blended with cross-entropy on the labels."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


class _TeacherLogitCache:
    """Teacher logits keyed by image content: without augmentation each image is the same every epoch."""

    def __init__(self) -> None:
        self.logits: dict[bytes, torch.Tensor] = {}

    def lookup(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in images.detach().cpu()]
        missing = [index for index, key in enumerate(keys) if key not in self.logits]
        if missing:
            computed = teacher(images[missing]).float().cpu()
            for index, row in zip(missing, computed):
                self.logits[keys[index]] = row
        return torch.stack([self.logits[key] for key in keys]).to(images.device)


def freeze_teacher(teacher: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Eval mode (fixed BatchNorm statistics, no dropout) and no gradients, on ``device``."""
    teacher.eval().to(device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def load_teacher(path: Path, input_shape: tuple[int, ...]) -> nn.Module:
    """Load a teacher checkpoint and check it reads the same (C, H, W) images as the student."""
    teacher, payload = load_model(path)
    teacher_shape = tuple(payload["input"]["shape"][1:])
    if teacher_shape != tuple(input_shape):
        raise UdaciSenseError(
            f"teacher {path} was trained on {teacher_shape} images but the student sees {tuple(input_shape)}; "
            "use a teacher trained with the same --channels and --image-size"
        )
    return teacher


def make_distillation_loss(
    teacher: nn.Module,
    config: DistillConfig = DistillConfig(),
    label_smoothing: float = 0.0,
    device: torch.device | str = "cpu",
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``fit`` loss function, ``(logits, images, labels) -> loss``, that asks the frozen ``teacher`` about every training batch."""
    freeze_teacher(teacher, device)
    cache = _TeacherLogitCache() if config.cache_teacher_logits else None

    def loss(student_logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = cache.lookup(teacher, images) if cache else teacher(images).float()
        if teacher_logits.shape != student_logits.shape:
            raise UdaciSenseError(
                f"teacher gives {tuple(teacher_logits.shape[1:])} logits but the student {tuple(student_logits.shape[1:])}; "
                "both must classify the same classes"
            )
        return distillation_loss(student_logits, teacher_logits, labels, config.temperature, config.alpha, label_smoothing)

    return loss

