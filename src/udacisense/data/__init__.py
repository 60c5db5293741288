"""Data sets by name: ``get_dataset(DataConfig(name="fashion-mnist"))``.

Sources: ``fashion-mnist`` (default, Debian IDX files), ``cifar10`` (local pickle batches),
``imagefolder`` (class sub-folders), ``synthetic`` (tests only).
"""

from __future__ import annotations

from dataclasses import dataclass
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
from udacisense.registry import Registry


@dataclass(frozen=True)
class DataSource:
    """How to load a data set, and the augmentation that suits its classes when the user names none."""

    load: Callable[[DataConfig], SourceData]
    augment: tuple[str, ...]


# Flips only where a mirrored image is still the same class: clothes and CIFAR's objects are; digits, letters and
# a user's unknown classes may not be (a mirrored 2 is no 2), so an ImageFolder gets crops only unless asked.
DATASETS: Registry[DataSource] = Registry("data set")
DATASETS.register("fashion-mnist", DataSource(lambda config: fashion_mnist.load(config.root), ("crop", "flip")))
DATASETS.register("cifar10", DataSource(lambda config: cifar10.load(config.root), ("crop", "flip")))
DATASETS.register("imagefolder", DataSource(lambda config: imagefolder.load(config.root, config.image_size, config.channels), ("crop",)))
DATASETS.register("synthetic", DataSource(lambda config: synthetic.load(image_size=config.image_size or 28, channels=config.channels or 1), ("crop",)))


def augmentation(config: DataConfig) -> tuple[str, ...]:
    """The training augmentation for ``config``: its own list, or its data set's default."""
    if config.augment is not None:
        return config.augment
    return DATASETS[config.name].augment if config.name in DATASETS else ()


def get_dataset(config: DataConfig) -> ImageDataset:
    """Load, convert, split and normalize the data set named in ``config``.

    The validation split is carved deterministically (``split_seed``) from the training set;
    the test set is left whole for final evaluation. Normalization statistics come from the
    training split only.
    """
    raw = DATASETS.get(config.name).load(config)

    def prepare(images: RawImages) -> RawImages:
        return RawImages(resize(convert_channels(images.images, config.channels), config.image_size), images.labels)

    train_all, test = prepare(raw.train), prepare(raw.test)
    order = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(config.split_seed))
    val_count = int(round(len(train_all) * config.val_fraction))
    val, train = train_all.take(order[:val_count]), train_all.take(order[val_count:])
    if config.train_subset is not None:
        train = train.take(torch.arange(min(config.train_subset, len(train))))
    if config.evaluate_on == "val":
        test = val  # measurements that choose between models must not see the test split
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
    contract: dict, name: str | None = None, root=None, test_subset: int | None = None, train_subset: int | None = None, **options
) -> ImageDataset:
    """The data a checkpoint was trained on, presented exactly as in training (shape and normalization).

    ``options`` are further :class:`DataConfig` fields (a recipe's split: ``val_fraction``, ``split_seed``, ``evaluate_on``).
    """
    from dataclasses import replace

    from udacisense.config import validate_config

    _, channels, height, _ = contract["shape"]
    config = validate_config(
        DataConfig,
        {"name": name or contract["dataset"], "root": root, "channels": channels, "image_size": height,
         "test_subset": test_subset, "train_subset": train_subset, **options},
        where="data options",
    )
    return replace(get_dataset(config), normalization=Normalization(tuple(contract["mean"]), tuple(contract["std"])))


__all__ = [
    "augmentation",
    "dataset_for_contract",
    "BatchLoader",
    "ImageDataset",
    "Normalization",
    "RawImages",
    "get_dataset",
    "DATASETS",
]
