"""TorchScript-lite ``.ptl`` for legacy apps, run here by the PyTorch Mobile lite interpreter.

``optimize_for_mobile`` needs ``torch.backends.xnnpack``, which this torch build lacks, so the
graph is saved as traced: correct, but without mobile-specific fusions.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from udacisense.formats.base import ExportFormat, Runner, Runtime, fp32_exporter, torch_threads
from udacisense.io import atomic_write


def export_ptl(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Trace ``model`` and save it for the lite interpreter."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; apps still load .ptl
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder) / "model.ptl"
        traced._save_for_lite_interpreter(str(scratch))
        data = scratch.read_bytes()
    atomic_write(path, lambda handle: handle.write(data))
    return {"optimize_for_mobile": "unavailable in this torch build (no torch.backends.xnnpack)"}


def load_ptl(kind: str, path: Path, threads: int | None) -> Runner:
    """The module in the lite interpreter, one image per call."""
    from torch.jit.mobile import _load_for_lite_interpreter

    module = _load_for_lite_interpreter(str(path))

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.inference_mode():
            return module(images)

    return Runner(kind, predict, 1)


PTL = ExportFormat("ptl", "TorchScript-lite", "model.ptl", fp32_exporter(export_ptl), Runtime("lite-interpreter", load_ptl), "ptl", backend="pytorch-mobile")
