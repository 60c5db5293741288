"""The bundle's web page in headless Chromium: how its predictions agree with onnxruntime's in Python, how fast it runs,
and the docs' screenshot.

    python benchmarks/web_page.py --checkpoint BEST.pt [--formats onnx-int8,web] [--images 1000] [--output runs/benchmarks/web]

Exports the checkpoint with the web format (the page runs the int8 ONNX file when the bundle has one), serves the
bundle, and in Debian's Chromium: the golden check, --images test images (as PNG files reach the page) against
onnxruntime's top-1 in Python on the same images, the in-browser latency of one image (the page's median of 25 runs,
WebAssembly, 1 thread) beside onnxruntime's 1-thread p50 here, and a screenshot with one test image classified.
Results: benchmarks/results/web.json, docs/img/web_page.png and the "web" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from browser import Browser, png_data_url  # noqa: E402
from common import ROOT, describe_machine, head_commit, machine, replace_doc_section, save_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--formats", default="onnx-int8,web")
    parser.add_argument("--images", type=int, default=1000, help="test images classified in the browser")
    parser.add_argument("--data-root", type=Path, help="the checkpoint's data, if not the default")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/web"))
    args = parser.parse_args()
    if "web" not in args.formats.split(","):
        parser.error("--formats must include web")

    from udacisense.bundle.build import build_bundle, remove_bundle
    from udacisense.bundle.web import page_server
    from udacisense.data import dataset_for_contract
    from udacisense.deploy.runtime import load_runner, run_batches

    remove_bundle(args.output)
    manifest = build_bundle(args.checkpoint, args.output, args.formats.split(","), data_root=args.data_root)
    page = manifest["artifacts"]["web"]
    runs = page["runs"]
    dataset = dataset_for_contract(manifest["input"], root=args.data_root, test_subset=args.images)
    images, labels = dataset.whole("test")
    expected = run_batches(load_runner(runs, args.output / page["model"], threads=1), images).argmax(1)
    from PIL import Image

    urls = [png_data_url(Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy())) for pixels in dataset.test.images[: len(labels)]]
    server = page_server(args.output)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}/web/"
    with tempfile.TemporaryDirectory() as profile, Browser(Path(profile), width=820, height=640) as browser:
        browser.open(address)
        state = browser.evaluate("window.udacisense.ready")
        started = time.perf_counter()
        got = browser.evaluate(f"window.udacisense.classifyUrls({json.dumps(urls)})")
        seconds = time.perf_counter() - started
        latency = [browser.evaluate(f"window.udacisense.classifyUrl({json.dumps(urls[0])})")["latencyMs"] for _ in range(5)]
        shown = Path(profile) / "test-image.png"  # a test image picked as a user picks a file
        shown.write_bytes(base64.b64decode(urls[1].split(",", 1)[1]))
        node = browser.call("Runtime.evaluate", {"expression": "document.getElementById('file')"})["result"]["objectId"]
        browser.call("DOM.setFileInputFiles", {"files": [str(shown)], "objectId": node})
        browser.evaluate("new Promise(r => { const poll = () => document.getElementById('result').hidden ? setTimeout(poll, 50) : r(); poll(); })")
        (ROOT / "docs" / "img" / "web_page.png").write_bytes(browser.screenshot())
    server.shutdown()
    server.server_close()
    import torch

    predicted = torch.tensor(got)
    entry = manifest["artifacts"][runs]
    results = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": head_commit(),
        "command": " ".join(["python benchmarks/web_page.py", *sys.argv[1:]]), "model": runs, "file": entry["file"], "bytes": entry["bytes"],
        "page_bytes": page["bytes"], "images": len(labels), "golden": state["golden"],
        "agreement": 100 * (predicted == expected).float().mean().item(), "browser_top1": 100 * (predicted == labels).float().mean().item(),
        "python_top1": 100 * (expected == labels).float().mean().item(), "browser_ms": sorted(latency)[len(latency) // 2],
        "onnxruntime_ms": entry["latency"]["1_thread"]["p50_ms"], "browser_images_per_second": len(labels) / seconds,
        "onnxruntime_web": page["export"]["onnxruntime_web"],
    }
    save_results("web", results)
    text = "\n".join([
        f"`{results['command']}` on {describe_machine(results['machine'])}; Chromium headless; {results['date']}, commit {results['commit']}. "
        f"The page runs `{results['file']}` ({results['model']}, {results['bytes'] / 1e6:.2f} MB; the page with onnxruntime-web "
        f"{results['onnxruntime_web']}'s WebAssembly build is {results['page_bytes'] / 1e6:.1f} MB in all).", "",
        "| | in the browser (onnxruntime-web, WebAssembly, 1 thread) | onnxruntime in Python (1 thread) |", "|---|---:|---:|",
        f"| top-1 on {results['images']:,} test images | {results['browser_top1']:.2f}% | {results['python_top1']:.2f}% |",
        f"| top-1 agreement between the two | {results['agreement']:.2f}% | |",
        f"| latency, batch 1 | {results['browser_ms']:.2f} ms (the page's median of 25 runs; median of 5 such) | {results['onnxruntime_ms']:.3f} ms (p50) |",
        f"| golden check (8 images) | {'PASS' if state['golden']['passed'] else 'FAIL'}, largest difference {state['golden']['drift']:.2e} "
        f"(tolerance {state['golden']['atol']:.2e}) | |", "",
        "![the page with one test image classified](img/web_page.png)",
    ])
    replace_doc_section("web", text)
    print(text)


if __name__ == "__main__":
    main()
