"""LiteRT (TensorFlow Lite) ``.tflite``, fp32 or int8, converted by ``litert-torch`` (its PT2E quantizer for int8) and
run here by ``ai-edge-litert``'s interpreter with the XNNPACK delegate, as Android apps run it. Optional:
``pip install 'udacisense[litert]'``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.formats.base import AppCode, ExportFormat, Runner, Runtime, Snippet, check_input, fp32_exporter, int8_exporter
from udacisense.io import atomic_write

INSTALL_HINT = "install it with: pip install 'udacisense[litert]'"


def _litert_torch():
    # litert-torch prints a progress bar per conversion step unless told otherwise; the bundle's own log says what runs
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    try:
        import litert_torch
    except ImportError as error:
        raise UdaciSenseError(f"the tflite formats need litert-torch ({error.name} is missing); {INSTALL_HINT}") from None
    return litert_torch


def export_tflite(model: nn.Module, example: torch.Tensor, path: Path, calibration_batches: Iterable[torch.Tensor] | None = None) -> dict[str, Any]:
    """Write ``model`` as a ``.tflite`` flatbuffer; when calibration batches are given, a full-integer int8 file
    (per-channel symmetric weights, int8 activations, int8 input and output) quantized by litert-torch's own PT2E
    quantizer."""
    litert_torch = _litert_torch()
    source = model.eval()
    options: dict[str, Any] = {}
    record: dict[str, Any] = {"converter": "litert-torch", "int8": False}
    if calibration_batches is not None:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        from udacisense.techniques.quantize import calibrate  # here: registering the formats should not import the quantizer

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(source, (example,)).module(), quantizer)
        record |= {"int8": True, "calibration_batches": calibrate(prepared, example, calibration_batches), "per_channel": True}
        source = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
        source.training = False  # what litert-torch reads (an exported graph refuses .eval()); the graph is already in eval form
        options["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    data = litert_torch.convert(source, (example,), **options).model_content()
    atomic_write(path, lambda handle: handle.write(data))
    return record


def load_tflite(kind: str, path: Path, threads: int | None) -> Runner:
    """The model in LiteRT's interpreter with its XNNPACK delegate. It takes and returns float32 NCHW batches, as every
    runner does: a full-integer file's int8 input is quantized and its int8 output dequantized here."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UdaciSenseError(f"{kind} artifacts run in ai-edge-litert, which is not installed; {INSTALL_HINT}") from None
    # the flag puts XNNPACK's delegate (with its latest kernels) in front, sized to num_threads, as the Android runtime does
    interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1, experimental_default_delegate_latest_features=True)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = tuple(int(side) for side in source["shape"])

    def predict(images: torch.Tensor) -> torch.Tensor:
        check_input(kind, images, shape)
        interpreter.set_tensor(source["index"], to_tensor_type(images.numpy(), source))
        interpreter.invoke()
        return torch.from_numpy(from_tensor_type(interpreter.get_tensor(target["index"]), target))

    return Runner(kind, predict, shape[0])


def to_tensor_type(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float32 values as the interpreter's input tensor holds them: quantized with the tensor's scale and zero point
    when it is an integer tensor (a full-integer int8 file takes int8 input), else as they are."""
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or not scale:
        return np.ascontiguousarray(values, dtype=np.float32)
    limits = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale) + zero_point, limits.min, limits.max).astype(detail["dtype"])


def from_tensor_type(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32 logits (dequantized when the file is full-integer)."""
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or not scale:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def preload_litert() -> None:
    with contextlib.suppress(ImportError):
        import ai_edge_litert.interpreter  # noqa: F401


# LiteRT's Android (com.google.ai.edge.litert, the org.tensorflow.lite API) and iOS (TensorFlowLiteSwift) interpreters.
# A float file takes and gives float32 in the exported layout (NCHW); a full-integer file takes int8, so the app
# quantizes the input with the input tensor's scale and zero point and dequantizes the logits, as the Python runner does.
LITERT_APP = Snippet(
    name="LiteRT",
    package="ai-edge-litert",
    android_dependency='// build.gradle: implementation("com.google.ai.edge.litert:litert:<release>")  // this file was checked in ai-edge-litert {version}',
    ios_dependency='// CocoaPods: pod "TensorFlowLiteSwift" (the LiteRT interpreter; this file was checked in ai-edge-litert {version})',
    java=AppCode(
        imports="import java.io.File;\nimport java.nio.ByteBuffer;\nimport java.nio.FloatBuffer;\nimport org.tensorflow.lite.Interpreter;\n"
                "import org.tensorflow.lite.Tensor;",
        module_type="Interpreter",
        load="new Interpreter(new File({path}))",
        forward="((java.util.function.Supplier<float[]>) () -> {{ Tensor.QuantizationParams inQ = {module}.getInputTensor(0).quantizationParams(); "
                "Tensor.QuantizationParams outQ = {module}.getOutputTensor(0).quantizationParams(); "
                "float[] logits = new float[{module}.getOutputTensor(0).numElements()]; "
                "if (inQ.getScale() == 0f) {{ {module}.run(FloatBuffer.wrap({input}), FloatBuffer.wrap(logits)); return logits; }} "
                "byte[] quantized = new byte[{input}.length]; for (int i = 0; i < quantized.length; i++) "
                "quantized[i] = (byte) Math.max(-128, Math.min(127, Math.round({input}[i] / inQ.getScale()) + inQ.getZeroPoint())); "
                "byte[] out = new byte[logits.length]; {module}.run(ByteBuffer.wrap(quantized), ByteBuffer.wrap(out)); "
                "for (int i = 0; i < out.length; i++) logits[i] = (out[i] - outQ.getZeroPoint()) * outQ.getScale(); return logits; }}).get()",
        release="{module}.close()",
    ),
    kotlin=AppCode(
        imports="import java.io.File\nimport java.nio.ByteBuffer\nimport java.nio.FloatBuffer\nimport org.tensorflow.lite.Interpreter",
        module_type="Interpreter",
        load="Interpreter(File({path}))",
        forward="{module}.let {{ m -> val inQ = m.getInputTensor(0).quantizationParams(); val outQ = m.getOutputTensor(0).quantizationParams(); "
                "val size = m.getOutputTensor(0).numElements(); "
                "if (inQ.scale == 0f) FloatArray(size).also {{ out -> m.run(FloatBuffer.wrap({input}), FloatBuffer.wrap(out)) }} "
                "else ByteArray(size).also {{ out -> m.run(ByteBuffer.wrap(ByteArray({input}.size) {{ i -> "
                "(Math.round({input}[i] / inQ.scale) + inQ.zeroPoint).coerceIn(-128, 127).toByte() }}), ByteBuffer.wrap(out)) }}"
                ".let {{ out -> FloatArray(size) {{ i -> (out[i] - outQ.zeroPoint) * outQ.scale }} }} }}",
        release="{module}.close()",
    ),
    swift=AppCode(
        imports="import Foundation\nimport TensorFlowLite",
        module_type="Interpreter",
        load="try Interpreter(modelPath: {path})",
        forward="try {{ () throws -> [Float] in try {module}.allocateTensors(); "
                "let data = try {module}.input(at: 0).quantizationParameters.map {{ q in Data({input}.map {{ "
                "UInt8(bitPattern: Int8(clamping: Int(($0 / q.scale).rounded()) + q.zeroPoint)) }}) }} "
                "?? {input}.withUnsafeBufferPointer {{ Data(buffer: $0) }}; "
                "try {module}.copy(data, toInputAt: 0); try {module}.invoke(); let output = try {module}.output(at: 0); "
                "if let q = output.quantizationParameters {{ return output.data.map {{ (Float(Int8(bitPattern: $0)) - Float(q.zeroPoint)) * q.scale }} }}; "
                "return output.data.withUnsafeBytes {{ Array($0.bindMemory(to: Float.self)) }} }}()",
    ),
)

LITERT = Runtime("litert", load_tflite, preload_litert)
TFLITE = ExportFormat("tflite", "LiteRT fp32 (XNNPACK)", "model_fp32.tflite", fp32_exporter(export_tflite), LITERT, "tflite", backend="xnnpack", snippet=LITERT_APP)
TFLITE_INT8 = ExportFormat("tflite-int8", "LiteRT int8 (XNNPACK)", "model_int8.tflite", int8_exporter(export_tflite), LITERT, "tflite", quantized=True,
                           backend="xnnpack", snippet=LITERT_APP)
