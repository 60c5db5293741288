"""Core ML ``.mlpackage`` via coremltools. It converts on Linux but runs only on Apple devices."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from udacisense.formats.base import ExportFormat, fp32_exporter


def export_coreml(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Convert to an ML Program; the result is marked 'converted, not run' because Core ML cannot execute here."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # its Linux import warns about macOS-only parts
    import coremltools as ct

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        converted = ct.convert(
            traced,
            inputs=[ct.TensorType(name="image", shape=tuple(example.shape))],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
        )
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        scratch = Path(folder) / path.name
        converted.save(str(scratch))
        if path.exists():
            shutil.rmtree(path)
        scratch.rename(path)
    return {"status": "converted, not run (Core ML executes only on Apple devices)", "coremltools": ct.__version__}


COREML = ExportFormat("coreml", "Core ML", "model.mlpackage", fp32_exporter(export_coreml), None, None, backend="coreml")  # no runtime here: Apple devices only
