"""ONNX export (fp32) and onnxruntime's static int8 QDQ quantization, the peer reference path."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from udacisense.io import atomic_write

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Write ``model`` as ONNX with a dynamic batch dimension."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch = Path(folder) / "model.onnx"
        torch.onnx.export(
            model.eval(),
            (example,),
            str(scratch),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
            opset_version=17,
        )
        data = scratch.read_bytes()
    atomic_write(path, lambda handle: handle.write(data))
    return {"opset": 17}


def quantize_onnx_static(fp32_path: Path, path: Path, calibration_batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """onnxruntime static int8: QDQ format, per-channel weights, min-max calibration."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration_batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch.numpy().astype(np.float32)}

    with tempfile.TemporaryDirectory() as folder:
        prepared, output = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        data = output.read_bytes()
    atomic_write(path, lambda handle: handle.write(data))
    return {"format": "QDQ", "per_channel": True}
