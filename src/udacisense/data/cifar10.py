"""CIFAR-10 from its standard python-pickle batches in a local folder (no downloads)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from udacisense.data.base import RawImages, SourceData
from udacisense.errors import UdaciSenseError

ROOT_ENV = "UDACISENSE_CIFAR10"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
HINT = (
    "download 'cifar-10-python.tar.gz' from https://www.cs.toronto.edu/~kriz/cifar.html on a machine with "
    f"network, unpack it, and pass --data-root (or ${ROOT_ENV}) pointing at 'cifar-10-batches-py'"
)


def load(root: Path | None = None) -> SourceData:
    """Read data_batch_1..5, test_batch and batches.meta from ``root`` (or its ``cifar-10-batches-py``)."""
    given = root or os.environ.get(ROOT_ENV)
    if given is None:
        raise UdaciSenseError(f"CIFAR-10 needs a local folder; {HINT}")
    folder = Path(given)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise UdaciSenseError(f"CIFAR-10 folder {folder} does not exist; {HINT}")
    train_parts = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    meta = _unpickle(folder / "batches.meta")
    names = meta.get(b"label_names") or meta.get("label_names")
    if not names:
        raise UdaciSenseError(f"{folder / 'batches.meta'} has no 'label_names'; {HINT}")
    return SourceData(
        train=RawImages(torch.cat([p.images for p in train_parts]), torch.cat([p.labels for p in train_parts])),
        test=_read_batch(folder / "test_batch"),
        classes=tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names),
    )


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise UdaciSenseError(f"CIFAR-10 file {path.name} not found in {path.parent}; {HINT}")
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except Exception as error:  # a corrupt pickle can raise nearly anything
        raise UdaciSenseError(f"{path} is not a readable CIFAR-10 batch ({type(error).__name__}); {HINT}") from None


def _read_batch(path: Path) -> RawImages:
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        raise UdaciSenseError(f"{path} lacks b'data' or b'labels'; {HINT}")
    array = np.asarray(data, dtype=np.uint8)
    if array.ndim != 2 or array.shape[1] != 3 * 32 * 32 or array.shape[0] != len(labels):
        raise UdaciSenseError(f"{path} has data of shape {array.shape} for {len(labels)} labels; expected (N, 3072)")
    images = torch.from_numpy(array.reshape(-1, 3, 32, 32).copy())
    return RawImages(images, torch.tensor(labels, dtype=torch.int64))
