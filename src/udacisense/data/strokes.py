"""A digits-like ImageFolder drawn from pen strokes, as a user's small data set would look (no download).

Each digit is a few polylines in the unit square. Every sample jitters the control points, then
applies a random rotation, scale, shear and shift and a random pen width, and is drawn at 4x the
size and downsampled, so strokes are antialiased like scanned handwriting. Digits are not
mirror-symmetric classes (a flipped 2 is no 2), which is what makes the data set a useful check of
per-data-set augmentation defaults.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0, points: int = 16) -> list[tuple[float, float]]:
    angles = np.radians(np.linspace(start, end, points))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# digit -> strokes (polylines, x right, y down, in [0, 1])
DIGITS: dict[str, list[list[tuple[float, float]]]] = {
    "0": [_ellipse(0.5, 0.5, 0.27, 0.38)],
    "1": [[(0.36, 0.26), (0.52, 0.1), (0.52, 0.9)]],
    "2": [[(0.25, 0.3), (0.35, 0.13), (0.58, 0.1), (0.74, 0.24), (0.7, 0.45), (0.25, 0.88), (0.8, 0.88)]],
    "3": [[(0.25, 0.15), (0.68, 0.12), (0.74, 0.3), (0.45, 0.47), (0.76, 0.62), (0.7, 0.86), (0.25, 0.88)]],
    "4": [[(0.64, 0.9), (0.64, 0.1), (0.2, 0.64), (0.82, 0.64)]],
    "5": [[(0.76, 0.11), (0.32, 0.11), (0.28, 0.46), (0.6, 0.42), (0.76, 0.6), (0.68, 0.86), (0.25, 0.88)]],
    "6": [[(0.7, 0.12), (0.42, 0.28), (0.28, 0.62), (0.38, 0.88), (0.64, 0.88), (0.72, 0.66), (0.55, 0.5), (0.3, 0.6)]],
    "7": [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.9)]],
    "8": [_ellipse(0.5, 0.29, 0.19, 0.18), _ellipse(0.5, 0.7, 0.23, 0.2)],
    "9": [_ellipse(0.5, 0.32, 0.2, 0.2), [(0.7, 0.32), (0.64, 0.9)]],
}


def render_digit(digit: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` grey uint8 image of ``digit`` with random jitter, pose and pen width."""
    angle = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(0.6, 1.1)
    shear = rng.uniform(-0.35, 0.35)
    shift = rng.uniform(-0.12, 0.12, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    canvas = size * SUPERSAMPLE
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    pen = int(round(rng.uniform(1.0, 4.0) * SUPERSAMPLE))
    ink = int(rng.integers(110, 256))
    for stroke in DIGITS[digit]:
        points = np.asarray(stroke) + rng.normal(0, 0.05, size=(len(stroke), 2)) - 0.5
        x, y = points[:, 0] + shear * points[:, 1], points[:, 1]
        x, y = scale * (cos * x - sin * y), scale * (sin * x + cos * y)
        pixels = [((px + 0.5 + shift[0]) * canvas, (py + 0.5 + shift[1]) * canvas) for px, py in zip(x, y)]
        draw.line(pixels, fill=ink, width=pen, joint="curve")
    small = np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.float32)
    noisy = small + rng.normal(0, 20, size=small.shape)
    return noisy.round().clip(0, 255).astype(np.uint8)


def write_stroke_digits(root: Path, train_per_class: int = 140, test_per_class: int = 40, size: int = 28, seed: int = 0) -> Path:
    """Write ``root/train/<digit>/*.png`` and ``root/test/<digit>/*.png``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for digit in DIGITS:
            folder = Path(root) / split / digit
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.fromarray(render_digit(digit, size, rng)).save(folder / f"{index:04d}.png")
    return Path(root)
