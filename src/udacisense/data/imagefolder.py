"""A folder of class sub-folders of images: ``root/train/<class>/*`` and ``root/test/<class>/*``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from udacisense.data.base import RawImages, SourceData
from udacisense.errors import UdaciSenseError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_SIZE = 32
LAYOUT = "expected root/train/<class>/<image> and root/test/<class>/<image>"


def load(root: Path | None, image_size: int | None = None, channels: int | None = None) -> SourceData:
    """Load every image into memory at ``image_size`` (default 32) as grey (1 channel) or RGB."""
    if root is None:
        raise UdaciSenseError(f"the imagefolder data set needs --data-root; {LAYOUT}")
    root = Path(root)
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise UdaciSenseError(f"{root} lacks train/ or test/ sub-folders; {LAYOUT}")
    classes = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise UdaciSenseError(f"{train_dir} needs at least two class folders, found {len(classes)}; {LAYOUT}")
    size = image_size or DEFAULT_SIZE
    mode = "L" if channels == 1 else "RGB"
    return SourceData(
        train=_read_split(train_dir, classes, size, mode),
        test=_read_split(test_dir, classes, size, mode),
        classes=classes,
    )


def _read_split(folder: Path, classes: tuple[str, ...], size: int, mode: str) -> RawImages:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob("*")):
            if path.suffix.lower() not in EXTENSIONS:
                continue
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode).resize((size, size), Image.BILINEAR))
            except (UnidentifiedImageError, OSError) as error:
                raise UdaciSenseError(f"cannot read image {path}: {error}") from None
            images.append(pixels.reshape(size, size, -1))
            labels.append(label)
    if not images:
        raise UdaciSenseError(f"no images found under {folder}; {LAYOUT}")
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return RawImages(stacked, torch.tensor(labels, dtype=torch.int64))
