"""Export a model to every mobile format: ``export_artifact(kind, model, example, path, calibration)``.

Kinds: ``pte`` / ``pte-int8`` (ExecuTorch + XNNPACK), ``onnx`` / ``onnx-int8`` (onnxruntime),
``ptl`` (TorchScript-lite), ``coreml`` (converted, not run).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError

FILE_NAMES = {
    "pte": "model_fp32.pte",
    "pte-int8": "model_int8.pte",
    "onnx": "model_fp32.onnx",
    "onnx-int8": "model_int8.onnx",
    "ptl": "model.ptl",
    "coreml": "model.mlpackage",
}
QUANTIZED = {"pte-int8", "onnx-int8"}
DEFAULT_FORMATS = ("pte", "pte-int8", "onnx", "onnx-int8", "ptl")


def parse_formats(text: str) -> list[str]:
    """'pte,pte-int8,onnx' -> ['pte', 'pte-int8', 'onnx'], rejecting unknown kinds with the known list."""
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in FILE_NAMES]
    if unknown or not kinds:
        raise UdaciSenseError(f"unknown export format(s) {unknown or text!r}; choose from {', '.join(FILE_NAMES)}")
    return kinds


def export_artifact(
    kind: str,
    model: nn.Module,
    example: torch.Tensor,
    folder: Path,
    calibration: Callable[[], list[torch.Tensor]],
) -> tuple[Path, dict[str, Any]]:
    """Write one artifact of ``kind`` into ``folder``; ``calibration()`` yields batches of ``example``'s shape."""
    from udacisense.export.coreml import export_coreml
    from udacisense.export.executorch import export_pte
    from udacisense.export.onnx import export_onnx, quantize_onnx_static
    from udacisense.export.torchscript import export_ptl

    path = folder / FILE_NAMES[kind]
    if kind == "pte":
        return path, export_pte(model, example, path)
    if kind == "pte-int8":
        return path, export_pte(model, example, path, calibration())
    if kind == "onnx":
        return path, export_onnx(model, example, path)
    if kind == "onnx-int8":
        with tempfile.TemporaryDirectory() as scratch:
            fp32 = folder / FILE_NAMES["onnx"]  # reuse the fp32 ONNX when this bundle already has it
            if not fp32.exists():
                fp32 = Path(scratch) / FILE_NAMES["onnx"]  # else keep the bundle to what was asked for
                export_onnx(model, example, fp32)
            return path, quantize_onnx_static(fp32, path, calibration())
    if kind == "ptl":
        return path, export_ptl(model, example, path)
    if kind == "coreml":
        return path, export_coreml(model, example, path)
    raise UdaciSenseError(f"unknown export format '{kind}'")
