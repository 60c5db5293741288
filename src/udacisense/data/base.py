"""In-memory image data: uint8 tensors, deterministic splits, batched augmentation.

The data sets this toolkit targets fit in memory (Fashion-MNIST is 47 MB as uint8), so
batches are sliced from one tensor and augmented on the whole batch at once: far faster on
2 CPU cores than a per-image PIL pipeline behind a multi-process DataLoader.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence, get_args

import torch
import torch.nn.functional as F

from udacisense.config import AugmentOp


@dataclass(frozen=True)
class RawImages:
    """What a data source returns: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def take(self, indices: torch.Tensor) -> "RawImages":
        return RawImages(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class SourceData:
    """A data set as loaded from disk, before splitting and conversion."""

    train: RawImages
    test: RawImages
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images_uint8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images_uint8.float() / 255.0 - mean) / std


@dataclass(frozen=True)
class ImageDataset:
    """Train/validation/test splits plus everything needed to feed a model the same way later."""

    name: str
    train: RawImages
    val: RawImages
    test: RawImages
    classes: tuple[str, ...]
    normalization: Normalization

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> "BatchLoader":
        """Batches of normalized float images for ``split`` ('train', 'val' or 'test'), augmented by the ``augment``
        operations (see :func:`augment_batch`)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}")
        return BatchLoader(getattr(self, split), batch_size, self.normalization, shuffle, augment, generator)

    def whole(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """All of ``split`` as one batch of normalized images and its labels."""
        data = getattr(self, split)
        return self.normalization.apply(data.images), data.labels

    def validation_batches(self, images: int, batch_size: int = 500) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``images`` validation images (training images when there is no validation split),
        normalized and unaugmented, with their labels, in batches of ``batch_size`` (the last may be short)."""
        split = self.val if len(self.val) else self.train
        normalized = self.normalization.apply(split.images[:images])
        return list(zip(normalized.split(batch_size), split.labels[:images].split(batch_size)))

    def calibration_batches(self, images: int, batch_size: int = 1, seed: int = 0) -> list[torch.Tensor]:
        """About ``images`` shuffled, unaugmented training images in full batches of ``batch_size``
        (exported graphs have a static batch size), the same ones for the same seed."""
        batches = self.loader("train", batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [batch for batch, _ in itertools.islice(batches, max(1, images // batch_size))]

    def contract(self) -> dict:
        """The input contract a deployed model must honour (stored in checkpoints and manifests)."""
        channels, height, width = self.input_shape
        return {
            "dataset": self.name,
            "shape": [1, channels, height, width],
            "dtype": "float32",
            "mean": list(self.normalization.mean),
            "std": list(self.normalization.std),
            "pixel_scale": "divide uint8 pixels by 255, then subtract mean and divide by std per channel",
            "classes": list(self.classes),
        }


class BatchLoader:
    """Iterates (images, labels) batches, each augmented as one tensor (see :func:`augment_batch`)."""

    def __init__(
        self,
        data: RawImages,
        batch_size: int,
        normalization: Normalization,
        shuffle: bool,
        augment: Sequence[str],
        generator: torch.Generator | None,
    ) -> None:
        unknown = set(augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {', '.join(AUGMENTATIONS)}")
        self.data = data
        self.batch_size = batch_size
        self.normalization = normalization
        self.shuffle = shuffle
        self.augment = tuple(augment)
        self.generator = generator

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.data)
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        for start in range(0, count, self.batch_size):
            indices = order[start : start + self.batch_size]
            images = self.data.images[indices]
            if self.augment:
                images = augment_batch(images, self.augment, self.generator)
            yield self.normalization.apply(images), self.data.labels[indices]


AUGMENTATIONS = get_args(AugmentOp)


def augment_batch(images: torch.Tensor, operations: Sequence[str], generator: torch.Generator | None) -> torch.Tensor:
    """Apply ``operations`` to a uint8 batch, in the fixed order crop, flip, erasing, each image drawn independently.

    crop: zero-pad by 1/8 of the side and crop back at a random offset. flip: mirror half the images left-right.
    erasing: random erasing (Zhong et al., 2020) of half the images: one rectangle of 2-33% of the area, aspect
    ratio 0.3-3.3, filled with uniform noise.
    """
    if "crop" in operations:
        images = random_crop(images, generator)
    if "flip" in operations:
        flip = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if "erasing" in operations:
        images = random_erasing(images, generator)
    return images.contiguous()


def random_crop(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by 1/8 of the side and crop back at a random offset per image."""
    batch, _, height, width = images.shape
    pad = max(1, height // 8)
    padded = F.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    rows = (top[:, None] + torch.arange(height))[:, :, None]  # (B, H, 1)
    cols = (left[:, None] + torch.arange(width))[:, None, :]  # (B, 1, W)
    cropped = padded.permute(0, 2, 3, 1)[torch.arange(batch)[:, None, None], rows, cols]  # (B, H, W, C)
    return cropped.permute(0, 3, 1, 2)


def random_erasing(images: torch.Tensor, generator: torch.Generator | None, probability: float = 0.5,
                   area: tuple[float, float] = (0.02, 0.33), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Replace one random rectangle per chosen image with uniform noise (the whole batch at once)."""
    batch, _, height, width = images.shape
    chosen = torch.rand(batch, generator=generator) < probability
    target_area = height * width * (area[0] + (area[1] - area[0]) * torch.rand(batch, generator=generator))
    log_aspect = math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * torch.rand(batch, generator=generator)
    box_h = (target_area * log_aspect.exp()).sqrt().round().clamp(1, height).long()
    box_w = (target_area / log_aspect.exp()).sqrt().round().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(batch, generator=generator) * (width - box_w + 1)).long()
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + box_h)[:, None])  # (B, H)
    inside_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + box_w)[:, None])  # (B, W)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None])[:, None]  # (B, 1, H, W)
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(mask, noise, images)


def compute_normalization(images: torch.Tensor) -> Normalization:
    """Mean and std per channel over a uint8 image tensor (N, C, H, W)."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    std = pixels.std(dim=1).clamp_min(1e-6)
    return Normalization(tuple(pixels.mean(dim=1).tolist()), tuple(std.tolist()))


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Grey to RGB by repetition; RGB to grey with ITU-R 601 luma weights."""
    current = images.shape[1]
    if channels is None or channels == current:
        return images
    if current == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if current == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(dim=1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {current}-channel images to {channels} channels")


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Square bilinear resize with antialiasing; a no-op when already that size."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)
