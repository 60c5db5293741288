"""Export formats, one registry: ``FORMATS.get(name).export(model, example, folder, calibration)``.

Each :class:`ExportFormat` says everything the rest of the toolkit needs to know about a format:
its file name, how to write it, which runtime runs it (None: it cannot run on this machine), the
fp32 format an int8 artifact is compared with, and whether exporting quantizes the model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.registry import Registry

Calibration = Callable[[], list[torch.Tensor]]
Exporter = Callable[[nn.Module, torch.Tensor, Path, Calibration], dict[str, Any]]


@dataclass(frozen=True)
class ExportFormat:
    """One mobile format: ``name`` is what recipes and ``--formats`` say."""

    name: str
    title: str
    file_name: str
    exporter: Exporter
    runtime: str | None
    reference: str | None
    quantized: bool = False
    backend: str = ""  # what executes it on the phone (a bundle's variants record it)

    @property
    def runs_here(self) -> bool:
        """Whether this machine has the runtime to validate and time the artifact."""
        return self.runtime is not None

    def export(self, model: nn.Module, example: torch.Tensor, folder: Path, calibration: Calibration) -> tuple[Path, dict[str, Any]]:
        """Write the artifact into ``folder``; ``calibration()`` yields batches of ``example``'s shape (int8 formats)."""
        path = folder / self.file_name
        return path, self.exporter(model, example, path, calibration)


FORMATS: Registry[ExportFormat] = Registry("export format")


def register_format(export_format: ExportFormat) -> ExportFormat:
    """Add a format to the registry under its own name."""
    return FORMATS.register(export_format.name, export_format)


def parse_formats(text: str) -> list[str]:
    """'pte,pte-int8,onnx' -> ['pte', 'pte-int8', 'onnx'], rejecting unknown names with a suggestion."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UdaciSenseError(f"no export format given; choose from {', '.join(FORMATS)}")
    for name in names:
        FORMATS.get(name)
    return names


def _pte(model, example, path, calibration):
    from udacisense.export.executorch import export_pte

    return export_pte(model, example, path)


def _pte_int8(model, example, path, calibration):
    from udacisense.export.executorch import export_pte

    return export_pte(model, example, path, calibration())


def _onnx(model, example, path, calibration):
    from udacisense.export.onnx import export_onnx

    return export_onnx(model, example, path)


def _onnx_int8(model, example, path, calibration):
    from udacisense.export.onnx import export_onnx, quantize_onnx_static

    with tempfile.TemporaryDirectory() as scratch:
        fp32 = path.parent / FORMATS["onnx"].file_name  # reuse the fp32 ONNX when this bundle already has it
        if not fp32.exists():
            fp32 = Path(scratch) / FORMATS["onnx"].file_name  # else keep the bundle to what was asked for
            export_onnx(model, example, fp32)
        return quantize_onnx_static(fp32, path, calibration())


def _ptl(model, example, path, calibration):
    from udacisense.export.torchscript import export_ptl

    return export_ptl(model, example, path)


def _coreml(model, example, path, calibration):
    from udacisense.export.coreml import export_coreml

    return export_coreml(model, example, path)


register_format(ExportFormat("pte", "ExecuTorch fp32 (XNNPACK)", "model_fp32.pte", _pte, "executorch", "pte", backend="xnnpack"))
register_format(ExportFormat("pte-int8", "ExecuTorch int8 (XNNPACK)", "model_int8.pte", _pte_int8, "executorch", "pte", quantized=True, backend="xnnpack"))
register_format(ExportFormat("onnx", "ONNX fp32", "model_fp32.onnx", _onnx, "onnxruntime", "onnx", backend="onnxruntime-cpu"))
register_format(ExportFormat("onnx-int8", "ONNX int8 (QDQ)", "model_int8.onnx", _onnx_int8, "onnxruntime", "onnx", quantized=True, backend="onnxruntime-cpu"))
register_format(ExportFormat("ptl", "TorchScript-lite", "model.ptl", _ptl, "lite-interpreter", "ptl", backend="pytorch-mobile"))
register_format(ExportFormat("coreml", "Core ML", "model.mlpackage", _coreml, None, None, backend="coreml"))

DEFAULT_FORMATS = ("pte", "pte-int8", "onnx", "onnx-int8", "ptl")
