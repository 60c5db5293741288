"""Fixtures: tiny data sets written in the exact on-disk formats the readers parse."""

from __future__ import annotations

import fcntl
import gzip
import importlib.util
import json
import os
import pickle
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn

from udacisense.data import fashion_mnist
from udacisense.health import chance_level
from udacisense.upstream import hush_kernel_preference_notice

# pytest-xdist's controller re-creates each warning a worker recorded, importing the module that defines its category:
# ExecuTorch's ExperimentalWarning imports executorch.exir, and with it torchao, in a process that ran none of our code.
hush_kernel_preference_notice()

REAL_FASHION_MNIST = Path(fashion_mnist.DEFAULT_ROOT)
# `udacisense search` options of the search tests, small and fast: every trial prunes (so each has a fine-tune worth
# promoting), proxy trials fine-tune 1 epoch on 2,000 images, latency is timed 10 times. The tiny model's int8 copies
# agree with their source on 96.6-97.6% of the images (measured), under the default 98% that fails a trial: the trials
# are held to 90% here, since these tests are about the search, not the tolerance.
PLUGIN = Path(__file__).resolve().parent / "plugins" / "weight_clustering.py"


def import_plugin():
    """Import tests/plugins/weight_clustering.py as a user would import their own module (once per process)."""
    if "weight_clustering_plugin" not in sys.modules:
        spec = importlib.util.spec_from_file_location("weight_clustering_plugin", PLUGIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules["weight_clustering_plugin"] = module
        spec.loader.exec_module(module)
    return sys.modules["weight_clustering_plugin"]


def forget_registrations(monkeypatch, *names: str) -> None:
    """Models the test registers under ``names`` are forgotten at its end: the model registry, the students and the
    sources (setitem, then del: monkeypatch removes a key it saw absent)."""
    from udacisense.models import MODEL_SOURCES, MODELS, STUDENTS

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    for table in (STUDENTS, MODEL_SOURCES):
        for name in names:
            monkeypatch.setitem(table, name, None)
            del table[name]


def import_user_module(monkeypatch, path: Path):
    """Import ``path`` as the user's own code would (``import <stem>``); sys.modules forgets it when the test ends."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


# a short search's settings, then its space: channel pruning and then int8 in every trial, no mixed precision
FAST_SETTINGS = ["--proxy-epochs", "1", "--full-epochs", "2", "--set", "search.promote_every=2", "--set", "search.promote=1",
                 "--set", "search.fine_tune={batch_size: 64}", "--set", "search.latency_runs=10", "--set", "search.calibration_images=32",
                 "--set", "data.train_subset=2000", "--set", "threads=1", "--set", "export.min_agreement=90"]
FAST_SEARCH = [*FAST_SETTINGS, "--set", "search.stages=[prune_channels, quantize]", "--set", "search.space.quantize.max_drop=[null]",
               "--set", "search.stage_options={prune_channels: {sensitivity_images: 300, sensitivity_ratios: [0.5]}}",
               "--set", "search.space.prune_channels=[true]", "--set", "search.space.quantize=[true]"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: with two intra-op threads each, two workers on two cores train about 5x slower (measured).
    # The environment variable reaches the subprocesses the tests start (commands, latency probes at 1 thread).
    os.environ["OMP_NUM_THREADS"] = "1"
    # Latency at 1 thread only: an all-core probe beside the other worker times the neighbour (728 ms a run, not 3.6).
    os.environ["UDACISENSE_LATENCY_THREADS"] = "1"
    torch.set_num_threads(1)


def above_chance(labels: torch.Tensor, num_classes: int, margin_points: float) -> float:
    """A top-1 threshold in percent: the chance level of a test's own ``labels`` (the share of their most frequent
    class, what always answering it scores; 10% only for a balanced ten-class set) plus ``margin_points`` percentage
    points. Each caller says why its margin: far above what luck gives on that many images, well below what it measured."""
    return 100.0 * chance_level(labels, num_classes) + margin_points


def brute_force_front(points: list[dict]) -> set[str]:
    """The trials no other point dominates, by definition: another point at least as accurate, as fast and as small,
    and strictly better on one of the three."""
    def beats(a: dict, b: dict) -> bool:
        at_least = a["top1"] >= b["top1"] and a["latency_ms"] <= b["latency_ms"] and a["megabytes"] <= b["megabytes"]
        return at_least and (a["top1"], a["latency_ms"], a["megabytes"]) != (b["top1"], b["latency_ms"], b["megabytes"])
    return {point["trial"] for point in points if not any(beats(other, point) for other in points)}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def fake_fashion_mnist(tmp_path: Path) -> Path:
    """A Fashion-MNIST folder with 60 train and 20 test images (the four gzip IDX files)."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 60), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8) % 10)
    return tmp_path


@pytest.fixture
def fake_cifar10(tmp_path: Path) -> Path:
    """A 'cifar-10-batches-py' folder: 5 train batches of 8 images, a test batch of 6, batches.meta."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)

    def dump(name: str, count: int, offset: int) -> None:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(offset + i) % 10 for i in range(count)],
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"filenames": [f"img_{offset + i}.png".encode() for i in range(count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)

    for index in range(1, 6):
        dump(f"data_batch_{index}", 8, 8 * index)
    dump("test_batch", 6, 0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}, handle, protocol=2)
    return tmp_path


@pytest.fixture(scope="session")
def real_fashion_mnist() -> Path:
    """The installed Debian Fashion-MNIST (make test installs it)."""
    if not (REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is not installed: run 'make test' (it installs dataset-fashion-mnist)")
    return REAL_FASHION_MNIST


def built_once(tmp_path_factory, name: str, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """``build(folder)`` once per test session, shared by the pytest-xdist workers (the first one to get here builds
    under a file lock, the others wait and reuse its folder and returned summary)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # under xdist: the session's folder
    folder, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return folder, json.loads(done.read_text())


def _fashion_config(runs: Path):
    from udacisense.config import DataConfig, RunConfig, TrainConfig

    return RunConfig(
        name="fashion", runs_dir=runs,
        data=DataConfig(root=REAL_FASHION_MNIST, train_subset=4000, test_subset=2000, val_fraction=0.05),
        model={"name": "mobilenet_v3_small", "kwargs": {"width_mult": 0.75}},
        train=TrainConfig(epochs=2, batch_size=64, lr=0.1, threads=1),
    )


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory, real_fashion_mnist):
    """MobileNetV3-Small (width 0.75) trained for 2 epochs on 4,000 real Fashion-MNIST images (~15 s), once per session."""
    from udacisense.train import train_run

    runs, summary = built_once(tmp_path_factory, "fashion_run", lambda folder: train_run(_fashion_config(folder)))
    return _fashion_config(runs), summary


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory, real_fashion_mnist) -> Path:
    """A user's small CNN (TinyNet, width 32, from a file) trained 3 epochs on 4,000 real Fashion-MNIST images (~10 s),
    once per session: the baseline checkpoint of the command and stage tests, where the technique is the point, not the model."""
    from udacisense.config import DataConfig, RunConfig, TrainConfig
    from udacisense.data import get_dataset
    from udacisense.train import train_run

    data = DataConfig(root=real_fashion_mnist, train_subset=4000, test_subset=1000, val_fraction=0.05)

    def build(runs: Path) -> dict:
        config = RunConfig(name="tiny", runs_dir=runs, data=data, model={"name": f"{write_user_model_file(runs)}:TinyNet", "kwargs": {"width": 32}},
                           train=TrainConfig(epochs=3, batch_size=64, lr=0.05, threads=1))
        return train_run(config)

    _, summary = built_once(tmp_path_factory, "tiny_baseline", build)
    # a real baseline: 62.8% measured on these 1,000 test images, whose chance level is 11.5%; luck reaches 16.6% (p = 1e-6)
    assert summary["test_top1"] > above_chance(get_dataset(data).test.labels, 10, 38.5)
    return Path(summary["run"]) / "best.pt"


class TinyNet(nn.Module):
    """A small user-defined CNN, as a user would bring one."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).flatten(1))


def write_user_model_file(folder: Path) -> Path:
    """TinyNet's source as a user's own file, passed as path/to/my_models.py:TinyNet."""
    source = Path(__file__).read_text()
    start, end = source.index("class TinyNet"), source.index("def write_user_model_file")
    path = folder / "my_models.py"
    path.write_text("import torch\nimport torch.nn as nn\n\n\n" + source[start:end])
    return path


@pytest.fixture
def user_model_file(tmp_path: Path) -> Path:
    """A model file a user would pass as path/to/file.py:TinyNet."""
    return write_user_model_file(tmp_path)


@pytest.fixture(scope="module")
def user_model_file_module(tmp_path_factory) -> Path:
    """The same file, shared by a module's tests."""
    return write_user_model_file(tmp_path_factory.mktemp("models"))


# Seconds of work per test file in one `make test` (Intel Xeon, 2 workers; pytest --durations=0, summed).
# `make test` hands whole files to its two workers in collection order (--dist loadfile --no-loadscope-reorder), so
# the files are collected longest first: the longest-processing-time rule, which leaves only short files to even out
# the end. With xdist's own order (most tests first; the two-test search files came last) the suite once took 593 s,
# 83 s more than half its summed work (1,020 s then).
FILE_SECONDS = {  # measured with --durations=0 on 2026-12-06 (evening, a slower hour), with the LiteRT formats, rounded up
    "test_loud_failures.py": 125, "test_pipeline.py": 84, "test_search_resilience.py": 71, "test_distributed.py": 69, "test_training_health.py": 56,
    "test_search_space.py": 49, "test_commands.py": 47, "test_faults.py": 43, "test_search.py": 39, "test_api.py": 35, "test_train.py": 32,
    "test_variants.py": 23, "test_quantize.py": 22, "test_export.py": 20, "test_litert.py": 20, "test_stages.py": 17, "test_compress.py": 12,
    "test_packaging.py": 10, "test_tracking.py": 9, "test_signing.py": 7, "test_console.py": 7, "test_fuzz.py": 6,
}


def pytest_collection_modifyitems(items) -> None:
    """Every test that trains on or measures real Fashion-MNIST is 'slow' (`pytest -m "not slow"` skips them for a
    quick check; `make test` runs them all). Files are ordered longest first (FILE_SECONDS), tests within a file as written."""
    for item in items:
        if "real_fashion_mnist" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's binaries, which `make test` installs) on a free local port, stopped at the
    end of the session. As root the server runs as the 'postgres' user, which initdb requires."""
    import glob
    import socket
    import subprocess

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed: run 'make test' (it installs the postgresql package)")
    bin_dir = Path(binaries[-1])
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="udacisense-postgres-"))  # not under pytest's root-only tmp: the server user must reach it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "search"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/search"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
