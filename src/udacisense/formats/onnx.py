"""ONNX export (fp32), onnxruntime's static int8 QDQ quantization (the peer reference path), and onnxruntime's CPU
execution provider that runs both."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from udacisense.formats.base import ExportFormat, Runner, Runtime, check_input, fp32_exporter
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


def load_onnx(kind: str, path: Path, threads: int | None) -> Runner:
    """An onnxruntime session on the CPU execution provider."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in spec.shape)

    def predict(images: torch.Tensor) -> torch.Tensor:
        check_input(kind, images, shape)
        return torch.from_numpy(session.run(None, {spec.name: images.numpy().astype(np.float32, copy=False)})[0])

    return Runner(kind, predict, None if shape[0] == -1 else shape[0])


def preload_onnxruntime() -> None:
    import onnxruntime  # noqa: F401


def _export_int8(model, example, path, calibration):
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = path.parent / ONNX.file_name  # reuse the fp32 ONNX when this bundle already has it
        if not fp32.exists():
            fp32 = Path(scratch) / ONNX.file_name  # else keep the bundle to what was asked for
            export_onnx(model, example, fp32)
        return quantize_onnx_static(fp32, path, calibration())


ONNXRUNTIME = Runtime("onnxruntime", load_onnx, preload_onnxruntime)
ONNX = ExportFormat("onnx", "ONNX fp32", "model_fp32.onnx", fp32_exporter(export_onnx), ONNXRUNTIME, "onnx", backend="onnxruntime-cpu")
ONNX_INT8 = ExportFormat("onnx-int8", "ONNX int8 (QDQ)", "model_int8.onnx", _export_int8, ONNXRUNTIME, "onnx", quantized=True, backend="onnxruntime-cpu")
