import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_idx
from udacisense import UdaciSenseError
from udacisense.config import DataConfig
from udacisense.data import fashion_mnist, get_dataset
from udacisense.data.base import augment_batch, compute_normalization, convert_channels, resize


def test_idx_reader_matches_written_arrays(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    plain = fashion_mnist.read_idx(write_idx(tmp_path / "x-idx3-ubyte", images, compress=False))
    packed = fashion_mnist.read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", images))
    assert np.array_equal(plain, images) and np.array_equal(packed, images)


def test_fashion_mnist_loads_fake_folder_with_split_and_normalization(fake_fashion_mnist):
    dataset = get_dataset(DataConfig(root=fake_fashion_mnist, val_fraction=0.25))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (45, 15, 20)
    assert dataset.input_shape == (1, 28, 28) and dataset.num_classes == 10
    assert dataset.classes[0] == "T-shirt/top"
    pixels = dataset.train.images.double() / 255
    assert dataset.normalization.mean[0] == pytest.approx(pixels.mean().item())
    batch, labels = next(iter(dataset.loader("train", 45)))
    assert batch.mean().item() == pytest.approx(0.0, abs=1e-5) and batch.std().item() == pytest.approx(1.0, abs=0.01)
    assert labels.dtype == torch.int64


def test_split_is_deterministic_and_disjoint(fake_fashion_mnist):
    first = get_dataset(DataConfig(root=fake_fashion_mnist, val_fraction=0.5, split_seed=4))
    second = get_dataset(DataConfig(root=fake_fashion_mnist, val_fraction=0.5, split_seed=4))
    other = get_dataset(DataConfig(root=fake_fashion_mnist, val_fraction=0.5, split_seed=5))
    assert torch.equal(first.val.images, second.val.images)
    assert not torch.equal(first.val.images, other.val.images)
    train_rows = {bytes(image.numpy()) for image in first.train.images}
    assert not any(bytes(image.numpy()) in train_rows for image in first.val.images)


def test_environment_variable_overrides_fashion_mnist_location(fake_fashion_mnist, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ROOT_ENV, str(fake_fashion_mnist))
    assert len(get_dataset(DataConfig(val_fraction=0.0)).train) == 60


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(UdaciSenseError, match="apt-get install -y dataset-fashion-mnist"):
        get_dataset(DataConfig(root=tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "damage, message",
    [(lambda data: data[:-10], "truncated"), (lambda data: b"\x01\x02" + data[2:], "not an IDX file")],
)
def test_malformed_idx_is_a_clear_error(fake_fashion_mnist, damage, message):
    path = fake_fashion_mnist / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    with pytest.raises(UdaciSenseError, match=message):
        get_dataset(DataConfig(root=fake_fashion_mnist))


def test_cifar10_reads_standard_pickle_batches(fake_cifar10):
    dataset = get_dataset(DataConfig(name="cifar10", root=fake_cifar10, val_fraction=0.0))
    assert len(dataset.train) == 40 and len(dataset.test) == 6
    assert dataset.input_shape == (3, 32, 32)
    assert dataset.classes[:2] == ("airplane", "automobile")
    with open(fake_cifar10 / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    # row-major channel planes: the first 1024 bytes are the red plane of image 0
    assert torch.equal(dataset.test.images[0, 0].flatten(), torch.from_numpy(raw[b"data"][0, :1024]))
    assert dataset.test.labels.tolist() == raw[b"labels"]


def test_cifar10_grey_and_resized(fake_cifar10):
    dataset = get_dataset(DataConfig(name="cifar10", root=fake_cifar10, channels=1, image_size=28))
    assert dataset.input_shape == (1, 28, 28)


def test_cifar10_missing_folder_and_missing_batch(tmp_path, fake_cifar10):
    with pytest.raises(UdaciSenseError, match="does not exist"):
        get_dataset(DataConfig(name="cifar10", root=tmp_path / "absent"))
    (fake_cifar10 / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UdaciSenseError, match="data_batch_3 not found"):
        get_dataset(DataConfig(name="cifar10", root=fake_cifar10))


def test_imagefolder_reads_class_folders(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(np.full((40, 40, 3), 50 * label + index, dtype=np.uint8)).save(folder / f"{index}.png")
    dataset = get_dataset(DataConfig(name="imagefolder", root=tmp_path, image_size=32, val_fraction=0.0))
    assert dataset.classes == ("cat", "dog") and dataset.input_shape == (3, 32, 32)
    assert len(dataset.train) == 8 and dataset.test.labels.tolist() == [0, 0, 1, 1]


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UdaciSenseError, match=r"unknown data set .mnist. \(known: fashion-mnist, cifar10, imagefolder, synthetic\)"):
        get_dataset(DataConfig(name="mnist"))


def test_subsets_limit_train_and_test(fake_fashion_mnist):
    dataset = get_dataset(DataConfig(root=fake_fashion_mnist, train_subset=10, test_subset=5))
    assert len(dataset.train) == 10 and len(dataset.test) == 5


def test_augmentation_crops_and_flips_deterministically():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    first = augment_batch(images, ("crop", "flip"), torch.Generator().manual_seed(0))
    again = augment_batch(images, ("crop", "flip"), torch.Generator().manual_seed(0))
    assert first.shape == images.shape and torch.equal(first, again)
    flipped_only = augment_batch(images.repeat(50, 1, 1, 1), ("flip",), torch.Generator().manual_seed(1))
    assert any(torch.equal(image[0], images[0, 0].flip(-1)) for image in flipped_only[::2])
    assert all(torch.equal(image[0], images[0, 0]) or torch.equal(image[0], images[0, 0].flip(-1)) for image in flipped_only[::2])


def test_random_erasing_replaces_one_rectangle_in_about_half_the_images():
    images = torch.zeros(400, 1, 28, 28, dtype=torch.uint8)
    erased = augment_batch(images, ("erasing",), torch.Generator().manual_seed(0))
    changed = (erased != 0).flatten(1)
    touched = changed.any(1)
    assert 150 < touched.sum() < 250  # probability 0.5
    share = changed[touched].float().mean(1)  # noise is zero with probability 1/256, so the share is a lower bound
    assert share.min() > 0.01 and share.max() < 0.34  # 2-33% of the area
    for image in erased[touched][:20, 0]:  # one axis-aligned rectangle: the bounding box of the noise is filled
        rows, cols = (image != 0).nonzero(as_tuple=True)
        box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box != 0).float().mean() > 0.95


def test_default_augmentation_depends_on_the_data_set_and_can_be_named(tmp_path, capsys):
    from udacisense.cli import main
    from udacisense.data import augmentation

    assert augmentation(DataConfig(name="fashion-mnist")) == ("crop", "flip")
    assert augmentation(DataConfig(name="imagefolder")) == ("crop",)  # a mirrored digit is no digit
    assert DataConfig(augment="none").augment == () and DataConfig(augment="crop,erasing").augment == ("crop", "erasing")
    assert DataConfig(augment=False).augment == () and DataConfig(augment=True).augment is None  # configs written before
    assert main(["train", "--data", "synthetic", "--augment", "crop,mirror", "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "data.augment" in error and "mirror" in error


def test_channel_conversion_and_resize():
    grey = torch.randint(0, 256, (2, 1, 10, 10), dtype=torch.uint8)
    assert torch.equal(convert_channels(convert_channels(grey, 3), 1), grey)
    assert resize(grey, 20).shape == (2, 1, 20, 20)
    stats = compute_normalization(torch.full((3, 1, 4, 4), 51, dtype=torch.uint8))
    assert stats.mean[0] == pytest.approx(0.2)
