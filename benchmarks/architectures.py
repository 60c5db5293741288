"""The model zoo side by side on Fashion-MNIST: each architecture trained with one short schedule a 2-core machine can
run, then exported to .pte fp32, .pte int8 and ONNX and validated in each runtime on the whole test split.

    python benchmarks/architectures.py [--models mobilenet_v3_small,mobilenet_v3_small@0.5,efficientnet_lite0,...]
                                       [--epochs 3] [--train-subset 12000] [--runs-dir runs/benchmarks/architectures]

A model is NAME or NAME@WIDTH (its width multiplier). Each one is two commands in their own processes, as a user would
run them: ``udacisense train`` (resumed when its run folder exists) and ``udacisense export --formats pte,pte-int8,onnx``.
The table gives parameters, MACs at 28 px (matrix products of attention included), each .pte's size and 1-thread
latency, the share of the graph XNNPACK took and the time spent in what it left out (ExecuTorch's profiler), and
top-1 of the eager model and of the int8 file. Writes benchmarks/results/architectures.json and the "architectures"
section of docs/benchmarks.md. The accuracies are of this short schedule, not of each architecture's best.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_results, provenance, provenance_line, replace_doc_section, save_results  # noqa: E402

MODELS = "mobilenet_v3_small,mobilenet_v3_small@0.75,mobilenet_v3_small@0.5,efficientnet_lite0,mobilevit_xxs,mobilevitv2_050"


def udacisense(*arguments: str) -> int:
    """The CLI in its own process."""
    print("$ udacisense", " ".join(arguments), flush=True)
    return subprocess.run([sys.executable, "-m", "udacisense.cli", *arguments]).returncode


def measure(spec: str, args: argparse.Namespace) -> dict:
    """Train (or resume) and export one model; its row."""
    from udacisense.checkpoint import load_model
    from udacisense.profile import count_macs

    name, _, width = spec.partition("@")
    label = spec.replace("@", "_w")
    run = args.runs_dir / label
    train = ["train", "--model", name, "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--name", label,
             "--runs-dir", str(args.runs_dir), *(["--model-arg", f"width_mult={width}"] if width else []),
             *(["--resume"] if (run / "config.yaml").is_file() else [])]
    if udacisense(*train) != 0:
        return {"model": name, "width": float(width) if width else None, "failed": f"training failed: see {run / 'train.log'}"}
    export_code = udacisense("export", "--checkpoint", str(run / "best.pt"), "--formats", "pte,pte-int8,onnx", "--output", str(run / "deploy"))
    if not (run / "deploy" / "manifest.json").is_file():
        return {"model": name, "width": float(width) if width else None, "failed": f"export failed (exit status {export_code}): see its output above"}
    manifest = json.loads((run / "deploy" / "manifest.json").read_text())
    model, payload = load_model(run / "best.pt")
    macs, _ = count_macs(model, tuple(payload["input"]["shape"]))
    metrics = json.loads((run / "metrics.json").read_text())
    artifacts = manifest["artifacts"]

    def artifact(kind: str) -> dict:
        entry = artifacts[kind]
        export = entry["export"]
        outside = export.get("outside_delegate")
        return {"megabytes": entry["bytes"] / 1e6, "p50_ms": entry["latency"]["1_thread"]["p50_ms"], "top1": entry["validation"]["top1"],
                "agreement": entry["validation"]["agreement"], "passed": entry["validation"]["passed"],
                "failures": entry["validation"]["failures"], "delegated_share": export.get("delegated_share"),
                "not_delegated_ops": export.get("not_delegated_ops", {}),
                "outside_delegate_share": outside["outside_delegate_share"] if outside else 0.0}

    return {"model": name, "width": float(width) if width else None, "params": sum(p.numel() for p in model.parameters()), "macs": macs,
            "test_top1": metrics["test_top1"], "epochs": args.epochs, "train_images": args.train_subset,
            "train_seconds": round(metrics["train_seconds"], 1), "export_exit_status": export_code,
            "pte": artifact("pte"), "pte-int8": artifact("pte-int8"), "onnx": artifact("onnx"), "eager_ms": manifest["source"]["latency"]["1_thread"]["p50_ms"]}


def render(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        label = row["model"] + (f" ×{row['width']:g}" if row.get("width") else "")
        if "failed" in row:
            rows.append(f"| {label} | {row['failed']} |" + " |" * 10)
            continue
        fp32, int8, onnx = row["pte"], row["pte-int8"], row["onnx"]
        verdict = "" if int8["passed"] else " (fails: " + "; ".join(int8["failures"]) + ")"
        rows.append(
            f"| {label} | {row['params'] / 1e6:.2f} M | {row['macs'] / 1e6:.1f} M | {row['test_top1']:.2f}% | "
            f"{fp32['megabytes']:.2f} / {int8['megabytes']:.2f} MB | {row['eager_ms']:.2f} ms | {fp32['p50_ms']:.3f} / {int8['p50_ms']:.3f} ms | "
            f"{100 * fp32['delegated_share']:.0f}% / {100 * int8['delegated_share']:.0f}% | "
            f"{100 * fp32['outside_delegate_share']:.0f}% / {100 * int8['outside_delegate_share']:.0f}% | "
            f"{int8['top1']:.2f}% ({int8['agreement']:.1f}%){verdict} | {'pass' if onnx['passed'] else 'FAIL'} | {row['train_seconds'] / 60:.1f} min |"
        )
    left_out = sorted({f"{row['model']}: " + ", ".join(op.removeprefix("aten_").removesuffix("_default") for op in row["pte"]["not_delegated_ops"])
                       for row in result["rows"] if "failed" not in row and row["pte"]["not_delegated_ops"]})
    return "\n".join([
        "### Architectures at 28 px",
        "",
        f"{provenance_line(result)} "
        f"Each model trained {result['epochs']} epochs on {result['train_subset']:,} Fashion-MNIST images (one-cycle, the training "
        "defaults; the short schedule, not each architecture's best), then `udacisense export --formats pte,pte-int8,onnx`: every "
        "artifact validated on all 10,000 test images in its runtime; latency p50 at batch 1, 1 thread, fresh process.",
        "",
        "| model | parameters | MACs | eager top-1 | `.pte` fp32 / int8 | eager | `.pte` fp32 / int8 | nodes on XNNPACK fp32 / int8 "
        "| time outside XNNPACK fp32 / int8 | int8 `.pte` top-1 (agreement) | ONNX | training |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        *rows,
        "",
        "Left to ExecuTorch's own kernels (fp32 `.pte`): " + ("; ".join(left_out) if left_out else "nothing") + ".",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help="comma list of NAME or NAME@WIDTH")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=12000)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/architectures"))
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section from stored results")
    args = parser.parse_args()
    if args.render:
        result = load_results("architectures")
    else:
        rows = [measure(spec, args) for spec in args.models.split(",")]
        options = [] if args.models == MODELS else [f"--models {args.models}"]
        options += [f"--{name} {value}" for name, value in (("epochs", args.epochs), ("train-subset", args.train_subset))
                    if value != parser.get_default(name.replace("-", "_"))]
        result = provenance() | {"command": " ".join(["python benchmarks/architectures.py", *options]),  # where the runs went is no part of it
                                 "epochs": args.epochs,
                  "train_subset": args.train_subset, "rows": rows}
        save_results("architectures", result)
    replace_doc_section("architectures", render(result))
    print(render(result))


if __name__ == "__main__":
    main()
