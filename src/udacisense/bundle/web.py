"""The bundle's web page (``web/``): the bundle's ONNX model classifying images in the browser.

``web/`` holds the page (``index.html``, ``app.js``, ``style.css``, from this package), the ONNX model it runs (a copy
of the bundle's int8 QDQ file, else its fp32 file), ``model.json`` (the file's sha256, the labels and input contract
from the manifest, the golden inputs with that file's outputs and the tolerance) and onnxruntime-web's WebAssembly
build, copied from the npm package that ``make`` installs with ``npm ci`` (package.json, package-lock.json). Nothing
is fetched from elsewhere: the page works offline, served by ``udacisense serve BUNDLE``.
"""

from __future__ import annotations

import json
import os
import shutil
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from udacisense.errors import ExportFailed
from udacisense.formats.web import WEB_SOURCES
from udacisense.io import atomic_write, sha256_of, size_of

PAGE = Path(__file__).resolve().parent / "web"  # index.html, app.js, style.css
PAGE_FILES = ("index.html", "app.js", "style.css")
# onnxruntime-web's WebAssembly-only build: the script that defines `ort`, its loader module and the SIMD binary it loads
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RUNTIME_VARIABLE = "UDACISENSE_ONNXRUNTIME_WEB"
SOURCE_TREE = Path(__file__).resolve().parents[3]  # package.json and node_modules/ of a source checkout (make installs it there)


def onnxruntime_web() -> tuple[Path, str]:
    """onnxruntime-web's ``dist`` folder and version: ``$UDACISENSE_ONNXRUNTIME_WEB`` (the package's folder), else the
    npm package installed in the source tree."""
    package = Path(os.environ.get(RUNTIME_VARIABLE) or SOURCE_TREE / "node_modules" / "onnxruntime-web")
    missing = [name for name in RUNTIME_FILES if not (package / "dist" / name).is_file()]
    if missing:
        raise ExportFailed(f"web: onnxruntime-web is not installed at {package} (no dist/{missing[0]}): run 'make web-runtime' (npm ci) in the "
                           f"source tree, or set {RUNTIME_VARIABLE} to the folder of an installed onnxruntime-web")
    return package / "dist", json.loads((package / "package.json").read_text())["version"]


def web_source(artifacts: dict[str, Any]) -> str | None:
    """Which of the bundle's artifacts the page runs: the int8 ONNX file when there is one and it passed validation, else
    the fp32 one (the golden outputs come from the file itself, so the page's check could not catch a bad one)."""
    present = [kind for kind in WEB_SOURCES if kind in artifacts]
    return next((kind for kind in present if artifacts[kind].get("validation", {}).get("passed")), present[-1] if present else None)


def write_web_page(output: Path, artifacts: dict[str, Any], contract: dict[str, Any], golden_inputs: torch.Tensor, atol: float) -> dict[str, Any]:
    """Write ``output/web/`` around the bundle's ONNX artifact; returns the manifest entry of the ``web`` format.

    ``artifacts`` are the bundle's entries with their ``golden_outputs`` (the logits the page must reproduce)."""
    kind = web_source(artifacts)
    if kind is None:
        raise ExportFailed(f"web: the bundle has no ONNX model to run ({' or '.join(WEB_SOURCES)})")
    dist, version = onnxruntime_web()
    folder = output / "web"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source = artifacts[kind]
    shutil.copyfile(output / source["file"], folder / source["file"])
    for name in RUNTIME_FILES:
        shutil.copyfile(dist / name, folder / name)
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, folder / name)
    step = output_step(folder / source["file"])
    # onnxruntime-web's WebAssembly int8 kernels may round an intermediate value the other way than the native ones: a
    # quantized output then moves by one step of its scale (seen: exactly one step, on a few logits)
    atol = atol + (step or 0.0)
    spec = {
        "model": source["file"], "sha256": source["sha256"], "kind": kind, "quantized": source["quantized"],
        "onnxruntime_web": version,
        "input": {key: contract[key] for key in ("shape", "mean", "std", "classes", "pixel_scale")},
        "golden": {"inputs": golden_inputs.tolist(), "outputs": source["golden_outputs"], "atol": atol},
    }
    text = json.dumps(spec)
    atomic_write(folder / "model.json", lambda handle: handle.write(text.encode()))
    return {
        "file": "web", "page": "web/index.html", "runtime": f"onnxruntime-web {version}",
        "quantized": source["quantized"], "runs": kind, "model": f"web/{source['file']}",
        "export": {"onnxruntime_web": version, "runs": kind},
        "golden_atol": atol,  # the page's tolerance against the golden outputs of onnxruntime here
        **({"golden_atol_reason": f"the manifest's {atol - step:g} plus one step of the int8 logits' scale ({step:.4g})"} if step else {}),
        "sha256": sha256_of(folder), "bytes": size_of(folder),
    }


def output_step(path: Path) -> float | None:
    """The quantization step of an ONNX model's output when its logits come out of a QDQ pair (an int8 file), else None."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    last = producer.get(graph.output[0].name)
    if last is None or last.op_type != "DequantizeLinear":
        return None
    scale = next((numpy_helper.to_array(init) for init in graph.initializer if init.name == last.input[1]), None)
    return None if scale is None or scale.size != 1 else float(scale)


def web_pages(bundle: Path) -> list[Path]:
    """The pages in a bundle: its ``web/index.html``, or each model's in a bundle of variants."""
    return sorted([*bundle.glob("web/index.html"), *bundle.glob("*/web/index.html")])


def page_server(bundle: Path, port: int = 0) -> ThreadingHTTPServer:
    """A static file server of ``bundle`` on 127.0.0.1 (``port`` 0: a free one; ``server.server_address`` says which),
    quiet, with the WebAssembly and module types browsers insist on. Call ``serve_forever()`` to serve."""

    class Handler(SimpleHTTPRequestHandler):
        extensions_map = SimpleHTTPRequestHandler.extensions_map | {".wasm": "application/wasm", ".mjs": "text/javascript",
                                                                      ".js": "text/javascript", ".json": "application/json"}

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(bundle), **kwargs)

        def end_headers(self) -> None:
            # cross-origin isolation: the page's timer then resolves microseconds (100 us without it, coarser than the model)
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
