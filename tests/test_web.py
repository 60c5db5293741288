"""The bundle's web page, served and run in Debian's headless Chromium: the browser's predictions against onnxruntime's
in Python on real test images, the golden check, the picked-image path, a damaged model and a page opened as a file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Browser, png_data_url
from udacisense.bundle.build import build_bundle
from udacisense.bundle.web import page_server, web_source
from udacisense.cli import main
from udacisense.data import dataset_for_contract
from udacisense.deploy.runtime import load_runner, run_batches
from udacisense.deploy.validate import Tolerances

IMAGES = 120  # test images classified in the browser


def build(checkpoint: Path, output: Path, formats: list[str]) -> dict:
    # a 3-epoch TinyNet's int8 file agrees about 97% with it, under the default 98%: a page runs only a file that passed
    return build_bundle(checkpoint, output, formats, calibration_images=64, test_subset=IMAGES, latency_runs=5,
                        tolerances=Tolerances(min_agreement=95), log=lambda _: None)


@pytest.fixture(scope="module")
def bundles(tiny_baseline, tmp_path_factory) -> dict[str, Path]:
    """One page around the fp32 ONNX file (asked for with the web format alone) and one around the int8 file."""
    root = tmp_path_factory.mktemp("web")
    build(tiny_baseline, root / "fp32", ["web"])
    build(tiny_baseline, root / "int8", ["onnx", "onnx-int8", "web"])
    return {"fp32": root / "fp32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def served(bundles):
    """Both bundles' parent folder served on a free port: base URL."""
    server = page_server(next(iter(bundles.values())).parent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_page_runs_the_int8_file_only_when_it_passed_validation():
    passed, failed = {"validation": {"passed": True}}, {"validation": {"passed": False}}
    assert web_source({"onnx": passed, "onnx-int8": passed}) == "onnx-int8"
    assert web_source({"onnx": passed, "onnx-int8": failed}) == "onnx"
    assert web_source({"onnx-int8": failed}) == "onnx-int8"  # nothing better to run: the bundle's validation failure says so
    assert web_source({"pte": passed}) is None


def test_the_page_reproduces_onnxruntime_on_real_test_images(bundles, served, real_fashion_mnist, tmp_path):
    for precision, folder in bundles.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        page = manifest["artifacts"]["web"]
        assert page["runs"] == {"fp32": "onnx", "int8": "onnx-int8"}[precision]
        assert (folder / page["model"]).read_bytes() == (folder / manifest["artifacts"][page["runs"]]["file"]).read_bytes()
        dataset = dataset_for_contract(manifest["input"], root=real_fashion_mnist, test_subset=IMAGES)
        images, _ = dataset.whole("test")
        expected = run_batches(load_runner(page["runs"], folder / page["model"], threads=1), images).argmax(1).tolist()
        urls = [png_data_url(Image.fromarray(pixels[0].numpy(), mode="L")) for pixels in dataset.test.images[:IMAGES]]
        with Browser(tmp_path / precision) as browser:
            browser.open(f"{served}/{folder.name}/web/")
            state = browser.evaluate("window.udacisense.ready")
            assert state["golden"]["passed"] and state["golden"]["count"] == 8, state
            assert browser.evaluate("document.body.dataset.golden") == "pass"
            assert "PASS" in browser.evaluate("document.getElementById('golden').textContent")
            got = browser.evaluate(f"window.udacisense.classifyUrls({json.dumps(urls)})")
        assert len(got) == IMAGES
        same = sum(a == b for a, b in zip(got, expected))
        if precision == "fp32":
            assert same == IMAGES, f"fp32: the browser differs from onnxruntime on {IMAGES - same} of {IMAGES} images"
        else:  # WebAssembly's int8 kernels may round a value the other way (one step of the logits' scale)
            assert same >= 0.99 * IMAGES, f"int8: the browser agrees with onnxruntime on {same} of {IMAGES} images"
        assert len(set(expected)) >= 5  # a model that predicts one class would pass trivially


def test_the_page_preprocesses_any_size_and_colour_as_training_did(bundles, served, tmp_path):
    """Random colour images larger and smaller than the model's input: the page's input equals the ImageFolder reader's
    (PIL: convert to "L", resize with BILINEAR, then the manifest's normalization), grey level for grey level."""
    contract = json.loads((bundles["int8"] / "manifest.json").read_text())["input"]
    rng = np.random.default_rng(0)
    with Browser(tmp_path / "profile") as browser:
        browser.open(f"{served}/int8/web/")
        for width, height in ((150, 90), (20, 17)):
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")
            url = png_data_url(image)
            grey = np.asarray(image.convert("L").resize((28, 28), Image.BILINEAR), dtype=np.float32)
            expected = (grey / 255 - contract["mean"][0]) / contract["std"][0]
            got = np.array(browser.evaluate(f"window.udacisense.inputOf({json.dumps(url)})"), dtype=np.float32).reshape(28, 28)
            step = 1 / 255 / contract["std"][0]  # one grey level, normalized
            assert np.abs(got - expected).max() < 0.01 * step, (width, height, np.abs(got - expected).max() / step)


def test_a_picked_photo_shows_top5_and_latency(bundles, served, tmp_path):
    picture = tmp_path / "photo.jpg"
    Image.new("RGB", (97, 61), (200, 40, 10)).save(picture)  # not square, not grey, not the model's size
    with Browser(tmp_path / "profile") as browser:
        browser.open(f"{served}/int8/web/")
        browser.evaluate("window.udacisense.ready")
        node = browser.call("Runtime.evaluate", {"expression": "document.getElementById('file')"})["result"]["objectId"]
        browser.call("DOM.setFileInputFiles", {"files": [str(picture)], "objectId": node})  # as a user picks the file
        shown = browser.evaluate("""new Promise(resolve => { const poll = () => document.getElementById('result').hidden
            ? setTimeout(poll, 50) : resolve({items: [...document.querySelectorAll('#top5 li')].map(li => li.textContent),
            latency: document.getElementById('latency').textContent, seen: [document.getElementById('seen').width,
            document.getElementById('seen').height], isolated: crossOriginIsolated}); poll(); })""")
    assert len(shown["items"]) == 5 and all("%" in item for item in shown["items"]), shown
    percents = [float(item.split(": ")[-1].rstrip("%")) for item in shown["items"]]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.1
    assert shown["seen"] == [28, 28]  # resized to the model's input
    assert shown["isolated"]  # served with cross-origin isolation: the page's timer resolves microseconds
    assert "median of 25 runs" in shown["latency"] and float(shown["latency"].split(": ")[1].split(" ms")[0]) > 0


def test_a_damaged_model_file_is_a_visible_error_and_a_file_url_says_to_serve(bundles, served, tmp_path):
    broken = bundles["int8"].parent / "broken"
    shutil.copytree(bundles["int8"], broken)
    model = broken / json.loads((broken / "manifest.json").read_text())["artifacts"]["web"]["model"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with Browser(tmp_path / "profile") as browser:
        browser.open(f"{served}/broken/web/")
        with pytest.raises(RuntimeError, match="does not match its sha256"):
            browser.evaluate("window.udacisense.ready")
        assert browser.evaluate("document.getElementById('error').hidden") is False
        assert "damaged or was changed" in browser.evaluate("document.getElementById('error').textContent")
        assert browser.evaluate("document.body.dataset.golden") is None  # no golden verdict from a model that never loaded

        browser.open((bundles["int8"] / "web" / "index.html").as_uri())
        with pytest.raises(RuntimeError, match="must be served"):
            browser.evaluate("window.udacisense.ready")
        message = browser.evaluate("document.getElementById('error').textContent")
        assert "udacisense serve" in message and "\n" not in message


def test_serve_prints_the_page_address_and_serves_webassembly(bundles, tmp_path, capsys):
    process = subprocess.Popen([sys.executable, "-m", "udacisense.cli", "serve", str(bundles["int8"])], stdout=subprocess.PIPE, text=True)
    try:
        address = process.stdout.readline().strip()
        assert address.startswith("http://127.0.0.1:") and address.endswith("/web/"), address
        with urllib.request.urlopen(address) as response:
            assert b"ort.wasm.min.js" in response.read()
        with urllib.request.urlopen(address + "ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
    finally:
        process.terminate()
        process.wait(timeout=10)
    empty = tmp_path / "no-page"
    empty.mkdir()
    assert main(["serve", str(empty)]) == 2
    assert "export it with the web format" in capsys.readouterr().err
