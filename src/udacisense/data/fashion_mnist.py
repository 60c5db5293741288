"""Fashion-MNIST from IDX files (Debian's ``dataset-fashion-mnist`` package by default)."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from udacisense.data.base import RawImages, SourceData
from udacisense.errors import UdaciSenseError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
ROOT_ENV = "UDACISENSE_FASHION_MNIST"
INSTALL_HINT = (
    "install it with 'sudo apt-get install -y dataset-fashion-mnist', or point --data-root "
    f"(or ${ROOT_ENV}) at a folder holding the four IDX files"
)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPE_UBYTE = 0x08


def load(root: Path | None = None) -> SourceData:
    """Read the train and test IDX files from ``root``, ``$UDACISENSE_FASHION_MNIST`` or the Debian path."""
    root = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    return SourceData(
        train=RawImages(_images(_find(root, "train-images-idx3-ubyte")), _labels(_find(root, "train-labels-idx1-ubyte"))),
        test=RawImages(_images(_find(root, "t10k-images-idx3-ubyte")), _labels(_find(root, "t10k-labels-idx1-ubyte"))),
        classes=CLASSES,
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip or plain) of unsigned bytes into a read-only array of its declared shape."""
    try:
        stat = path.stat()
    except OSError as error:
        raise UdaciSenseError(f"cannot read {path}: {error}; {INSTALL_HINT}") from None
    # A pipeline loads its data for every stage and measurement; unzipping the 26 MB of training images once is enough.
    return _read_idx(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path, mtime_ns: int, size: int) -> np.ndarray:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise UdaciSenseError(f"cannot read {path}: {error}; {INSTALL_HINT}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UdaciSenseError(f"{path} is not an IDX file (bad magic number); {INSTALL_HINT}")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != _IDX_DTYPE_UBYTE:
        raise UdaciSenseError(f"{path} holds IDX type 0x{dtype_code:02x}; only unsigned bytes (0x08) are supported")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise UdaciSenseError(f"{path} is truncated inside its header; {INSTALL_HINT}")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = int(np.prod(shape))
    if len(data) - header_size != expected:
        raise UdaciSenseError(
            f"{path} declares shape {shape} ({expected} bytes) but holds {len(data) - header_size}; "
            f"the file is truncated or corrupt, {INSTALL_HINT}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise UdaciSenseError(f"Fashion-MNIST file {stem}.gz not found in {root}; {INSTALL_HINT}")


def _images(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 3:
        raise UdaciSenseError(f"{path} should hold images (3 dimensions) but has shape {array.shape}")
    return torch.from_numpy(array.copy()).unsqueeze(1)


def _labels(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 1:
        raise UdaciSenseError(f"{path} should hold labels (1 dimension) but has shape {array.shape}")
    return torch.from_numpy(array.astype(np.int64))
