"""Synthetic, learnable images for tests only: each class is a stripe pattern of its own orientation and frequency.

Stripes survive what convolutional classifiers do (local filters, then global average pooling) and a
random phase per image makes every shift of a pattern still the same class, so small networks learn
the classes within a few dozen steps. (Random-pixel templates, the earlier design, are invisible after
global pooling: networks stayed at chance and nobody noticed until training was judged.)
"""

from __future__ import annotations

import math

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
    """Deterministic data set whose classes a small network separates within a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(num_classes, dtype=torch.float32)
    orientations = (num_classes + 1) // 2
    angles = math.pi * (classes // 2) / orientations  # half as many orientations as classes, 36 degrees apart for ten
    frequencies = 0.08 + 0.16 * (classes % 2)  # each at a coarse and a fine frequency
    rows, cols = torch.meshgrid(torch.arange(image_size, dtype=torch.float32), torch.arange(image_size, dtype=torch.float32), indexing="ij")

    def draw(count: int) -> RawImages:
        labels = torch.arange(count) % num_classes
        phase = 2 * math.pi * torch.rand(count, generator=generator)
        angle, frequency = angles[labels][:, None, None], frequencies[labels][:, None, None]
        wave = torch.sin(2 * math.pi * frequency * (cols * angle.cos() + rows * angle.sin()) + phase[:, None, None])
        noise = torch.randn(count, channels, image_size, image_size, generator=generator) * 25
        images = (127.5 + 90 * wave[:, None] + noise).round().clamp(0, 255).to(torch.uint8)
        return RawImages(images, labels)

    return SourceData(draw(train_size), draw(test_size), tuple(f"class_{i}" for i in range(num_classes)))
