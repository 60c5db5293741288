"""Data sets by name: ``get_dataset(DataConfig(name="fashion-mnist"))``.

Sources: ``fashion-mnist`` (default, Debian IDX files), ``cifar10`` (local pickle batches),
``imagefolder`` (class sub-folders), ``synthetic`` (tests only).
"""

from __future__ import annotations

from typing import Callable

import torch

from udacisense.config import DataConfig
from udacisense.data import cifar10, fashion_mnist, imagefolder, synthetic
from udacisense.data.base import (
    BatchLoader,
    ImageDataset,
    Normalization,
    RawImages,
    SourceData,
    compute_normalization,
    convert_channels,
    resize,
)
from udacisense.errors import UdaciSenseError

_SOURCES: dict[str, Callable[[DataConfig], SourceData]] = {
    "fashion-mnist": lambda config: fashion_mnist.load(config.root),
    "cifar10": lambda config: cifar10.load(config.root),
    "imagefolder": lambda config: imagefolder.load(config.root, config.image_size, config.channels),
    "synthetic": lambda config: synthetic.load(image_size=config.image_size or 28, channels=config.channels or 1),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return sorted(_SOURCES)


def get_dataset(config: DataConfig) -> ImageDataset:
    """Load, convert, split and normalize the data set named in ``config``.

    The validation split is carved deterministically (``split_seed``) from the training set;
    the test set is left whole for final evaluation. Normalization statistics come from the
    training split only.
    """
    source = _SOURCES.get(config.name)
    if source is None:
        raise UdaciSenseError(f"unknown data set '{config.name}'; known: {', '.join(list_datasets())}")
    raw = source(config)

    def prepare(images: RawImages) -> RawImages:
        return RawImages(resize(convert_channels(images.images, config.channels), config.image_size), images.labels)

    train_all, test = prepare(raw.train), prepare(raw.test)
    order = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(config.split_seed))
    val_count = int(round(len(train_all) * config.val_fraction))
    val, train = train_all.take(order[:val_count]), train_all.take(order[val_count:])
    if config.train_subset is not None:
        train = train.take(torch.arange(min(config.train_subset, len(train))))
    if config.test_subset is not None:
        test = test.take(torch.arange(min(config.test_subset, len(test))))
    return ImageDataset(
        name=config.name,
        train=train,
        val=val,
        test=test,
        classes=raw.classes,
        normalization=compute_normalization(train.images),
    )


def dataset_for_contract(
    contract: dict, name: str | None = None, root=None, test_subset: int | None = None, train_subset: int | None = None
) -> ImageDataset:
    """The data a checkpoint was trained on, presented exactly as in training (shape and normalization)."""
    from dataclasses import replace

    from udacisense.config import validate_config

    _, channels, height, _ = contract["shape"]
    config = validate_config(
        DataConfig,
        {"name": name or contract["dataset"], "root": root, "channels": channels, "image_size": height,
         "test_subset": test_subset, "train_subset": train_subset},
        where="data options",
    )
    return replace(get_dataset(config), normalization=Normalization(tuple(contract["mean"]), tuple(contract["std"])))


__all__ = [
    "dataset_for_contract",
    "BatchLoader",
    "ImageDataset",
    "Normalization",
    "RawImages",
    "get_dataset",
    "list_datasets",
]
