"""Export formats, one registry: ``FORMATS.get(name).export(model, example, folder, calibration)``.

What a format is lives in :mod:`udacisense.formats.base`, each family's formats in a file of their own beside it (its
exporter, its runtime loader); importing this package registers the built-in ones, in the order the CLI lists them.
"""

from udacisense.formats import coreml, executorch, litert, onnx, torchscript, web
from udacisense.formats.base import DEFAULT_FORMATS, FORMATS, ExportFormat, Runner, Runtime, parse_formats, register_format

for _export_format in (executorch.PTE, executorch.PTE_INT8, onnx.ONNX, onnx.ONNX_INT8, litert.TFLITE, litert.TFLITE_INT8, torchscript.PTL,
                       coreml.COREML, web.WEB):
    register_format(_export_format)

__all__ = ["DEFAULT_FORMATS", "FORMATS", "ExportFormat", "Runner", "Runtime", "parse_formats", "register_format"]
