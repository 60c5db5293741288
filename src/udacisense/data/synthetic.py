"""Synthetic, learnable images for tests only: each class is a fixed random pattern plus noise."""

from __future__ import annotations

import torch

from udacisense.data.base import RawImages, SourceData


def load(
    num_classes: int = 10,
    channels: int = 1,
    image_size: int = 28,
    train_size: int = 1200,
    test_size: int = 400,
    seed: int = 0,
) -> SourceData:
    """Deterministic data set whose classes a small network separates within a few steps."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=generator) * 255

    def draw(count: int) -> RawImages:
        labels = torch.arange(count) % num_classes
        noise = torch.randn(count, channels, image_size, image_size, generator=generator) * 40
        images = (templates[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return RawImages(images, labels)

    return SourceData(draw(train_size), draw(test_size), tuple(f"class_{i}" for i in range(num_classes)))
