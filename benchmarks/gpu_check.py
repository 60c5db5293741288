"""Issue 17: the GPU code path, checked end to end: training with bf16 autocast and channels-last (and optionally
torch.compile), QAT, and the int8 .pte export validated on the CPU runtime.

    python benchmarks/gpu_check.py [--epochs 3] [--train-subset N] [--compile] [--runs-dir runs/gpu-check]

On a machine without CUDA it runs the same steps on the CPU (autocast and channels-last are then off, as the
training config documents) and says so. Prints the device, training throughput, top-1 after training, after QAT and of
the exported int8 .pte, and writes benchmarks/results/gpu_check.json and the "gpu-check" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import provenance, provenance_line, replace_doc_section, save_results  # noqa: E402
from udacisense.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from udacisense.pipeline.recipe import validate_recipe  # noqa: E402
from udacisense.pipeline.runner import run_pipeline  # noqa: E402
from udacisense.train import train_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, help="train on only this many images (a quick smoke run)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (CUDA graphs on a GPU)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/gpu_check"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (no CUDA: autocast and channels-last are off)'}")

    started = time.perf_counter()
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.1, amp=True, channels_last=True, compile=args.compile)
    config = RunConfig(name="baseline", runs_dir=args.runs_dir, data=DataConfig(train_subset=args.train_subset),
                       model={"name": "mobilenet_v3_small"}, train=train)
    summary = train_run(config, overwrite=True)
    train_seconds = time.perf_counter() - started

    recipe = {"name": "qat", "data": {"name": "fashion-mnist", "train_subset": args.train_subset},
              "baseline": {"checkpoint": str(Path(summary["run"]) / "best.pt")},
              "stages": [{"stage": "quantize", "method": "qat", "fine_tune": {"epochs": 1, "batch_size": args.batch_size, "lr": 0.002}}],
              "export": {"formats": ["pte-int8"], "latency_runs": 100}, "targets": {"max_accuracy_drop": 100}}
    started = time.perf_counter()
    result = run_pipeline(validate_recipe(recipe), args.runs_dir, overwrite=True, report=False)
    qat_seconds = time.perf_counter() - started
    artifact = result["deploy"]["artifacts"]["pte-int8"]
    results = {
        **provenance(), "device": device, "epochs": args.epochs, "train_subset": args.train_subset, "compile": args.compile,
        "train_images_per_second": summary.get("train_images_per_second"), "train_seconds": train_seconds,
        "baseline_test_top1": summary["test_top1"], "qat_seconds": qat_seconds,
        "qat_pte_top1": artifact["validation"]["top1"], "qat_pte_agreement": artifact["validation"]["agreement"],
        "qat_pte_megabytes": artifact["bytes"] / 1e6, "qat_pte_latency_ms": artifact["latency"]["1_thread"]["p50_ms"],
    }
    save_results("gpu_check", results)
    line = (f"{provenance_line(results)} Training on **{device}**: "
            f"{results['train_images_per_second']:.0f} train img/s over {args.epochs} epochs ({train_seconds:.0f} s), baseline top-1 "
            f"{results['baseline_test_top1']:.2f}%; QAT (1 epoch) and the int8 `.pte` export in {qat_seconds:.0f} s: top-1 "
            f"{results['qat_pte_top1']:.2f}% in ExecuTorch on the CPU, agreement {results['qat_pte_agreement']:.2f}%, "
            f"{results['qat_pte_megabytes']:.2f} MB, {results['qat_pte_latency_ms']:.3f} ms (1 thread).")
    replace_doc_section("gpu-check", "#### GPU path check\n\n" + line
                        + ("" if device == "cuda" else " The machine has no GPU: this is the CPU fallback."))
    print(line)


if __name__ == "__main__":
    main()
