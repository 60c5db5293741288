"""The ``web`` format: a page (the bundle's ``web/`` folder) that classifies images in the browser with the bundle's
ONNX model, run by onnxruntime-web's WebAssembly build. It is no model file of its own: the bundle builds it around
its int8 ONNX file or, without one, its fp32 ONNX file (:mod:`udacisense.bundle.web`)."""

from __future__ import annotations

from udacisense.formats.base import ExportFormat

# the model files the page can run, preferred first; a bundle that asks for the page and neither gets the last one
WEB_SOURCES = ("onnx-int8", "onnx")

WEB = ExportFormat(
    name="web",
    title="web page (onnxruntime-web, WebAssembly)",
    file_name="web",
    exporter=None,
    runtime=None,  # the browser runs it: the page checks its golden outputs there, and the bundle's tests run it in Chromium
    reference=None,
    backend="onnxruntime-web",
)
