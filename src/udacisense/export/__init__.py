"""Export formats, one registry: ``FORMATS.get(name).export(model, example, folder, calibration)``.

What a format is lives in :mod:`udacisense.export.formats`, each family's formats in a file of their own there (its
exporter, its runtime loader); importing this package registers the built-in ones, in the order the CLI lists them.
"""

from udacisense.export.formats import (
    DEFAULT_FORMATS,
    FORMATS,
    ExportFormat,
    Runner,
    Runtime,
    coreml,
    executorch,
    onnx,
    parse_formats,
    register_format,
    torchscript,
)

for _export_format in (executorch.PTE, executorch.PTE_INT8, onnx.ONNX, onnx.ONNX_INT8, torchscript.PTL, coreml.COREML):
    register_format(_export_format)

__all__ = ["DEFAULT_FORMATS", "FORMATS", "ExportFormat", "Runner", "Runtime", "parse_formats", "register_format"]
