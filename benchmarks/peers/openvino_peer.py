"""NNCF post-training int8 run by OpenVINO: the peer that benchmarks/peers.py measures in its own virtual environment
(benchmarks/peers/requirements.txt), because NNCF and OpenVINO are no dependency of udacisense. It imports neither
torch nor udacisense; arrays come and go as .npy files, results as one JSON line on stdout.

    python openvino_peer.py quantize --onnx M.onnx --calibration C.npy --out DIR [--validation V.npz --max-drop 0.01]
    python openvino_peer.py logits --model DIR/model.xml --images X.npy --out L.npy
    python openvino_peer.py time --model DIR/model.xml --shape 1,1,28,28 --runs 300

``time`` is the same probe as udacisense's (benchmarks/peers.py calls it once per round, each a fresh process): load,
3 runs for the peak memory, 20 untimed runs, then ``--runs`` timed runs at batch 1 on 1 thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np


def load_memory_probe():
    """udacisense's memory readings (src/udacisense/deploy/memory.py, standard library only), loaded from the source tree
    without importing the package, which needs torch: the peer's memory is counted as ours is."""
    path = Path(__file__).resolve().parents[2] / "src" / "udacisense" / "deploy" / "memory.py"
    spec = importlib.util.spec_from_file_location("udacisense_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_model(model, threads: int | None):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
    return ov.Core().compile_model(model, "CPU", config)


def quantize(args: argparse.Namespace) -> dict:
    import nncf
    import openvino as ov

    started = time.perf_counter()
    model = ov.Core().read_model(args.onnx)
    images = [image[None] for image in np.load(args.calibration)]  # batch-1 inputs: the images udacisense calibrates with
    calibration = nncf.Dataset(images)
    if args.validation is None:
        quantized = nncf.quantize(model, calibration, subset_size=len(images))
    else:
        held_out = np.load(args.validation)
        items = [(image[None], label) for image, label in zip(held_out["images"], held_out["labels"])]

        def validate(compiled, data) -> tuple[float, list[float]]:
            """Top-1 on the held-out items, and each item's correctness (NNCF ranks layers by it)."""
            output = compiled.outputs[0]
            correct = [float(np.argmax(compiled(image)[output]) == label) for image, label in data]
            return float(np.mean(correct)), correct

        quantized = nncf.quantize_with_accuracy_control(model, calibration, nncf.Dataset(items), validate, max_drop=args.max_drop,
                                                        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(images))
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out / "model.xml", compress_to_fp16=False)
    return {"seconds": seconds, "peak_rss_bytes": load_memory_probe().memory_status()["VmHWM"], "files": sorted(path.name for path in out.iterdir())}


def logits(args: argparse.Namespace) -> dict:
    compiled = compile_model(args.model, None)
    images = np.load(args.images)
    output = compiled.outputs[0]
    result = np.concatenate([compiled(images[start:start + 256])[output] for start in range(0, len(images), 256)])
    np.save(args.out, result.astype(np.float32))
    return {"images": len(images)}


def time_model(args: argparse.Namespace) -> dict:
    import openvino as ov  # imported before the memory baseline, as udacisense's probe imports its runtime first

    memory = load_memory_probe()
    memory.reset_peak()
    before = memory.memory_status()
    compiled = compile_model(ov.Core().read_model(args.model), 1)
    request = compiled.create_infer_request()  # OpenVINO's fastest synchronous path: one request, reused, input shared
    example = np.random.default_rng(0).standard_normal([int(size) for size in args.shape.split(",")]).astype(np.float32)
    timings = []
    for index in range(3 + 20 + args.runs):
        started = time.perf_counter()
        request.infer({0: example}, share_inputs=True)
        if index == 2:
            after = memory.memory_status()
            model_files = [Path(args.model), Path(args.model).with_suffix(".bin")]
            library_pages = max(0, after["RssFile"] - before["RssFile"] - memory.mapped_bytes(*model_files))
        if index >= 23:
            timings.append((time.perf_counter() - started) * 1000)
    ordered = sorted(timings)
    return {"p50_ms": statistics.median(ordered), "p90_ms": ordered[round(0.9 * (len(ordered) - 1))], "runs": len(ordered),
            "model_bytes": after["VmHWM"] - before["VmRSS"] - library_pages,
            "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")), "openvino": ov.get_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("quantize")
    command.add_argument("--onnx", required=True)
    command.add_argument("--calibration", required=True)
    command.add_argument("--out", required=True)
    command.add_argument("--validation", help="npz of images and labels: quantize with accuracy control on it")
    command.add_argument("--max-drop", type=float, default=0.01, help="absolute top-1 drop allowed (0.01 = 1 pt)")
    command = commands.add_parser("logits")
    command.add_argument("--model", required=True)
    command.add_argument("--images", required=True)
    command.add_argument("--out", required=True)
    command = commands.add_parser("time")
    command.add_argument("--model", required=True)
    command.add_argument("--shape", required=True)
    command.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps({"quantize": quantize, "logits": logits, "time": time_model}[args.command](args)))


if __name__ == "__main__":
    main()
