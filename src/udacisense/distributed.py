"""Data-parallel training under torchrun: ``torchrun --nproc_per_node N -m udacisense.cli train|run|prune ...``.

PyTorch's own engine does the work (``torch.distributed`` process groups, ``DistributedDataParallel``; gloo on CPU,
nccl on CUDA); this module holds the few decisions around it:

- **One writer.** Rank 0 owns the run folder, the console, the tracking and every measurement the results report.
  Every other rank runs the same command in a private scratch copy of the run folder (copied from the real one when
  resuming) with its console sent to a log file there, so that all ranks take the same steps in the same order and
  meet in every collective, while nothing they write can collide with rank 0's files.
- **Sharding.** Every rank draws the same global batch (same seed, same augmentation) and trains on its contiguous
  slice of it; the loss is weighted by the slice's share, so DDP's gradient average equals the gradient of the whole
  global batch as one process computes it (:func:`shard`).
- **Identical models.** Rank 0's weights and buffers (BatchNorm statistics are per rank on CPU, where SyncBatchNorm
  does not run) are broadcast before every checkpoint ``fit`` saves and at its end, so every later step (pruning,
  sensitivity, another fine-tune) starts from the same model on every rank.
- **Measurements on rank 0 only** (:func:`main_only`): the others wait, then take its numbers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from udacisense.errors import UdaciSenseError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes torchrun started (size 1: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a plain process is rank 0 of 1."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> World:
    """Join the process group once (gloo on CPU, nccl on CUDA; a rank that stops answering fails the others within
    ``UDACISENSE_DIST_TIMEOUT`` seconds, default 600)."""
    current = world()
    if current.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(current.local_rank)
        timeout = timedelta(seconds=float(os.environ.get("UDACISENSE_DIST_TIMEOUT", 600)))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return current


_scratch: Path | None = None


def private_runs_dir(runs_dir: Path, name: str, resume: bool) -> Path:
    """For a rank other than 0: a scratch runs folder, holding a copy of ``runs_dir/name`` when resuming (rank 0 waits
    until every copy is made, so that it cannot change the folder under them), with this rank's console in its log.
    A runs folder already inside this process's scratch (a pipeline's baseline training) is returned as it is."""
    global _scratch
    if _scratch is not None and Path(runs_dir).resolve().is_relative_to(_scratch):
        return Path(runs_dir)
    current = world()
    scratch = _scratch = Path(tempfile.mkdtemp(prefix=f"udacisense-rank{current.rank}-")).resolve()
    source = Path(runs_dir) / name
    if resume and source.is_dir():
        shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("*.lock"))
    atexit.register(shutil.rmtree, scratch / name, True)  # the copy only served this process; its console log stays
    log = open(scratch / f"rank{current.rank}.log", "a", buffering=1)
    print(f"rank {current.rank} of {current.size}: console in {log.name}", file=sys.stderr, flush=True)
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    return scratch


def main_only(work: Callable[[], T]) -> T:
    """``work()`` on rank 0 once every rank got here, its result on every rank: for measurements, which the other ranks
    neither need (they take rank 0's numbers) nor may disturb."""
    if not dist.is_initialized():
        return work()
    dist.barrier()
    return from_main(work() if world().main else None)


def barrier() -> None:
    """Wait for every rank (nothing when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def shard(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's contiguous slice of a global batch and its loss weight (slice size x ranks / batch size): with DDP's
    gradient averaging, the weighted losses give the gradient of the mean loss over the whole batch."""
    current = world()
    if not dist.is_initialized() or current.size == 1 or labels.numel() < current.size:
        return images, labels, 1.0  # a last batch too small to split: every rank takes all of it, the average is the same
    per_rank = -(-labels.numel() // current.size)
    start = min(current.rank * per_rank, labels.numel())
    end = min(start + per_rank, labels.numel())
    return images[start:end], labels[start:end], (end - start) * current.size / labels.numel()


def all_sum(*values: float) -> list[float]:
    """Sums over ranks (the values themselves when not distributed)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, in place."""
    if dist.is_initialized():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def sync_batchnorm(model: nn.Module, device: torch.device) -> Callable[[], None]:
    """Turn ``model``'s BatchNorm layers into SyncBatchNorm for training under torchrun; returns the function that turns
    them back (exports and checkpoints expect plain BatchNorm). PyTorch runs SyncBatchNorm on GPUs only."""
    if not dist.is_initialized() or world().size == 1:
        return lambda: None
    if device.type != "cuda":
        raise UdaciSenseError("sync_batchnorm runs on GPUs only (PyTorch's SyncBatchNorm); on CPU each rank keeps its own statistics: drop it")
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                synced = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats).to(device)
                synced.load_state_dict(child.state_dict())
                setattr(parent, name, synced)
                replaced.append((parent, name, child))

    def restore() -> None:
        for parent, name, original in replaced:
            original.load_state_dict(getattr(parent, name).state_dict())  # what training learned, in the original layer
            setattr(parent, name, original)

    return restore


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed (its gradients are averaged over ranks in backward)."""
    if not dist.is_initialized() or world().size == 1:
        return model
    # gradients as views into DDP's buckets: no copy, and no warning about a 1-channel kernel's strides
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
