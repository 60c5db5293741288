"""Load an artifact in the runtime that will ship it and call it like a function: images -> logits.

- ``pte``/``pte-int8``: the ExecuTorch runtime (Python bindings of the C++ runtime, XNNPACK inside)
- ``onnx``/``onnx-int8``: onnxruntime's CPU execution provider
- ``ptl``: the PyTorch Mobile lite interpreter
- ``eager``: an in-memory PyTorch model; ``checkpoint``: a UdaciSense checkpoint file, run eagerly;
  ``torchscript``: a saved TorchScript module (how ``profile`` measures any model's memory)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from udacisense.errors import UdaciSenseError
from udacisense.export import FORMATS
from udacisense.upstream import hush_kernel_preference_notice

hush_kernel_preference_notice()  # torchao's import-time notice (see upstream.py), before anything imports torchao

# Export formats that run here, plus the in-process kinds used for sources and profiling.
RUNTIMES = {name: spec.runtime for name, spec in FORMATS.items() if spec.runtime} | {
    "eager": "pytorch",
    "checkpoint": "pytorch",
    "torchscript": "torchscript",
}


@dataclass
class Runner:
    """A loaded artifact: ``predict`` takes a float32 (N, C, H, W) batch of ``batch_size`` (None: any)."""

    kind: str
    predict: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int | None


def load_runner(kind: str, path: Path | None = None, threads: int | None = 1, model: torch.nn.Module | None = None) -> Runner:
    """Open ``path`` (or wrap ``model`` for 'eager') with ``threads`` intra-op threads (None: the runtime's default)."""
    if kind == "eager":
        return _eager_runner(model, threads)
    if kind not in RUNTIMES:
        raise UdaciSenseError(f"no runtime for artifact kind '{kind}'; known: {', '.join(sorted(RUNTIMES))}")
    if path is None or not Path(path).is_file():
        raise UdaciSenseError(f"artifact {path} does not exist; run 'udacisense export' first")
    if kind == "checkpoint":
        from udacisense.checkpoint import load_model

        return _eager_runner(load_model(path)[0], threads)
    if kind == "torchscript":
        return _eager_runner(torch.jit.load(str(path)), threads)
    loader = {"executorch": _executorch_runner, "onnxruntime": _onnx_runner, "lite-interpreter": _lite_runner}
    return loader[RUNTIMES[kind]](kind, Path(path), threads)


def run_batches(runner: Runner, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for all ``images``, split into the batch size the artifact accepts."""
    step = runner.batch_size or batch_size
    return torch.cat([runner.predict(images[i : i + step]) for i in range(0, images.shape[0], step)])


def _eager_runner(model: torch.nn.Module | None, threads: int) -> Runner:
    if model is None:
        raise ValueError("the 'eager' runner needs a model")
    model.eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        with _torch_threads(threads), torch.inference_mode():
            return model(images)

    return Runner("eager", predict, None)


def _executorch_runner(kind: str, path: Path, threads: int) -> Runner:
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    # The pool is process-wide, and resizing it after it has run deadlocks (seen here): size it only
    # in a fresh process, before anything executes. threads=None keeps the default (all cores).
    if threads and _threadpool_get_thread_count() != threads:
        with _quiet_stderr():
            _unsafe_reset_threadpool(threads)
    with _quiet_stderr():
        method = Runtime.get().load_program(path).load_method("forward")
    shape = tuple(method.metadata.input_tensor_meta(0).sizes())

    def predict(images: torch.Tensor) -> torch.Tensor:
        _check_shape(kind, images, shape)
        return method.execute([images.contiguous()])[0]

    return Runner(kind, predict, shape[0])


def _onnx_runner(kind: str, path: Path, threads: int) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in spec.shape)

    def predict(images: torch.Tensor) -> torch.Tensor:
        _check_shape(kind, images, shape)
        return torch.from_numpy(session.run(None, {spec.name: images.numpy().astype(np.float32, copy=False)})[0])

    return Runner(kind, predict, None if shape[0] == -1 else shape[0])


def _lite_runner(kind: str, path: Path, threads: int) -> Runner:
    from torch.jit.mobile import _load_for_lite_interpreter

    module = _load_for_lite_interpreter(str(path))

    def predict(images: torch.Tensor) -> torch.Tensor:
        with _torch_threads(threads), torch.inference_mode():
            return module(images)

    return Runner(kind, predict, 1)


def _check_shape(kind: str, images: torch.Tensor, expected: tuple[int, ...]) -> None:
    if images.dtype != torch.float32:
        raise UdaciSenseError(f"{kind} artifact takes float32 input, got {images.dtype}")
    matches = images.ndim == len(expected) and all(e in (-1, a) for e, a in zip(expected, images.shape))
    if not matches:
        wanted = ", ".join("N" if e == -1 else str(e) for e in expected)
        raise UdaciSenseError(f"{kind} artifact expects input ({wanted}) but got {tuple(images.shape)}")


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_stderr():
    """ExecuTorch's cpuinfo prints probe noise to fd 2 on x86 hosts; keep the console readable."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
