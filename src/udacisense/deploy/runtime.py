"""Load an artifact in the runtime that will ship it and call it like a function: images -> logits.

An export format's artifacts load in the format's own runtime (see :mod:`udacisense.formats.base`: ExecuTorch for
``pte``/``pte-int8``, onnxruntime's CPU execution provider for ``onnx``/``onnx-int8``, the PyTorch Mobile lite
interpreter for ``ptl``). Three kinds are no export format and run in PyTorch here: ``eager``, an in-memory model;
``checkpoint``, a UdaciSense checkpoint file; ``torchscript``, a saved TorchScript module (how ``profile`` measures any
model's memory).
"""

from __future__ import annotations

from pathlib import Path

import torch

from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS, Runner
from udacisense.formats.base import torch_threads

MODEL_FILE_KINDS = ("checkpoint", "torchscript")  # model files that are not export artifacts: sources, profiling


def loadable_kinds() -> list[str]:
    """Every kind :func:`load_runner` opens: the export formats that run here, 'eager' and the model file kinds."""
    return sorted([name for name, export_format in FORMATS.items() if export_format.runs_here] + ["eager", *MODEL_FILE_KINDS])


def load_runner(kind: str, path: Path | None = None, threads: int | None = 1, model: torch.nn.Module | None = None) -> Runner:
    """Open ``path`` (or wrap ``model`` for 'eager') with ``threads`` intra-op threads (None: the runtime's default)."""
    if kind == "eager":
        return _eager_runner(model, threads)
    if kind not in loadable_kinds():
        raise UdaciSenseError(f"no runtime for artifact kind '{kind}'; known: {', '.join(loadable_kinds())}")
    if path is None or not Path(path).is_file():
        raise UdaciSenseError(f"artifact {path} does not exist; run 'udacisense export' first")
    if kind == "checkpoint":
        from udacisense.checkpoint import load_model

        return _eager_runner(load_model(path)[0], threads)
    if kind == "torchscript":
        return _eager_runner(torch.jit.load(str(path)), threads)
    return FORMATS[kind].runtime.load(kind, Path(path), threads)


def run_batches(runner: Runner, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for all ``images``, split into the batch size the artifact accepts."""
    step = runner.batch_size or batch_size
    return torch.cat([runner.predict(images[i : i + step]) for i in range(0, images.shape[0], step)])


def _eager_runner(model: torch.nn.Module | None, threads: int) -> Runner:
    if model is None:
        raise ValueError("the 'eager' runner needs a model")
    model.eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.inference_mode():
            return model(images)

    return Runner("eager", predict, None)
