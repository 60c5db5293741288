"""Compression benchmark I on the Fashion-MNIST MobileNetV3-Small baseline: distillation and pruning.

    python benchmarks/compress.py [--only channels50,kd] [--structured-epochs 10] [--kd-epochs 5]

(a) KD gain: MobileNetV3-Small trained alone vs distilled from the baseline checkpoint, same epochs.
(b) Unstructured 30/50/70/90% and structured (channel) 25/50/70% pruning, each fine-tuned with
    the unpruned model as teacher: parameters, MACs, file and gzip size, eager and .pte fp32
    latency (fresh process, 1 thread and all cores), test top-1 on all 10,000 test images.

Each experiment writes runs/benchmarks/compress/<name>/ and its row into
benchmarks/results/compress.json as soon as it finishes; a rerun skips finished rows
(delete the row or pass --redo to measure again). Then the "compress" section of
docs/benchmarks.md is rewritten from the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_results, machine, replace_doc_section, save_results  # noqa: E402

from udacisense.checkpoint import load_model  # noqa: E402
from udacisense.compress.apply import prune_checkpoint  # noqa: E402
from udacisense.compress.channels import ChannelPruneConfig  # noqa: E402
from udacisense.compress.prune import UnstructuredPruneConfig  # noqa: E402
from udacisense.config import DataConfig, DistillConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from udacisense.deploy.bench import bench_artifact  # noqa: E402
from udacisense.export.executorch import export_pte  # noqa: E402
from udacisense.runs import get_logger, prepare_run_dir  # noqa: E402
from udacisense.train import train_run  # noqa: E402

import torch  # noqa: E402

BASELINE = Path("runs/benchmarks/baseline_mobilenet_v3_small/best.pt")
RUNS = Path("runs/benchmarks/compress")
UNSTRUCTURED = (0.3, 0.5, 0.7, 0.9)
STRUCTURED = (0.25, 0.5, 0.7)


def pte_latency(checkpoint: Path) -> dict:
    """Export ``checkpoint`` to an fp32 .pte and time it in a fresh ExecuTorch process."""
    model, payload = load_model(checkpoint)
    example = torch.zeros(payload["input"]["shape"])
    path = checkpoint.with_suffix(".pte")
    export_pte(model, example, path)
    bench = bench_artifact("pte", path, tuple(example.shape))
    return {"bytes": path.stat().st_size, "latency_ms": {label: timing["p50_ms"] for label, timing in bench["latency"].items()}}


def prune_row(name: str, config, epochs: int, lr: float) -> dict:
    run_dir = prepare_run_dir(RUNS, name, overwrite=True)
    train_config = TrainConfig(epochs=epochs, lr=lr, schedule="cosine")
    summary = prune_checkpoint(BASELINE, run_dir, config, train_config, DistillConfig(), logger=get_logger(run_dir, "prune"))
    return {
        "config": summary["config"],
        "fine_tune": {"epochs": epochs, "lr": lr, "schedule": "cosine", "distill": "unpruned model, T=4, alpha=0.7"},
        "before": _strip(summary["before"]),
        "after": _strip(summary["after"]),
        "pte_after": pte_latency(run_dir / "model.pt"),
    }


def kd_row(name: str, epochs: int, teacher: Path | None) -> dict:
    config = RunConfig(
        name=name,
        runs_dir=RUNS,
        data=DataConfig(),
        model=ModelConfig(name="mobilenet_v3_small"),
        train=TrainConfig(epochs=epochs),
        distill=DistillConfig(teacher=teacher) if teacher else None,
    )
    resume = (RUNS / name / "last.pt").exists()
    summary = train_run(config, resume=resume, overwrite=not resume)
    return {"epochs": epochs, "teacher": str(teacher) if teacher else None, "test_top1": summary["test_top1"],
            "train_seconds": summary["train_seconds"]}


def _strip(measured: dict) -> dict:
    return {key: value for key, value in measured.items() if key not in ("layers", "per_class_accuracy")}


def render(results: dict) -> str:
    info = results.get("machine", machine())
    lines = [
        "## Compression I: distillation and pruning (MobileNetV3-Small baseline)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores. Source: `{BASELINE}`. Test top-1 on all 10,000 test images; "
        "latency at batch 1, p50, eager in-process and `.pte` fp32 (XNNPACK) in a fresh process. "
        "Command: `python benchmarks/compress.py`.",
    ]
    rows = results.get("rows", {})
    baseline = next((row for row in rows.values() if "before" in row), None)
    if baseline:
        base, base_pte = baseline["before"], results.get("baseline_pte", {})
        lines += [
            "",
            "| model | top-1 | Δ pt | params | non-zero | MACs | file | gzip | eager 1T | `.pte` 1T | `.pte` all |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            _table_row("baseline (fp32)", base, base, base_pte),
        ]
        for name, row in rows.items():
            if "after" in row:
                lines.append(_table_row(_label(row), row["after"], base, row["pte_after"]))
    channels50 = rows.get("channels50")
    if channels50 and baseline:
        after, base_pte = channels50["after"], results.get("baseline_pte", {}).get("latency_ms", {})
        drop = base["test_top1"] - after["test_top1"]
        macs_cut = base["macs"] / after["macs"]
        pte_speedup = base_pte.get("1_thread", float("nan")) / channels50["pte_after"]["latency_ms"]["1_thread"]
        met = drop <= 1.0 and macs_cut >= 2 and pte_speedup >= 1.5
        lines += [
            "",
            f"Issue 5 target (50% channels, self-distilled: <= 1.0 pt drop, >= 2x fewer MACs, >= 1.5x faster `.pte` at 1 thread): "
            f"drop {drop:.2f} pt, MACs / {macs_cut:.2f}, `.pte` {pte_speedup:.2f}x faster: **{'met' if met else 'NOT met'}**.",
        ]
    kd = {name: row for name, row in rows.items() if name.startswith("kd_")}
    if kd:
        lines += ["", "| knowledge distillation | epochs | teacher | test top-1 | train time |", "|---|---|---|---|---|"]
        for name, row in kd.items():
            lines.append(f"| {name} | {row['epochs']} | {row['teacher'] or '—'} | {row['test_top1']:.2f}% | {row['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def _label(row: dict) -> str:
    config = row["config"]
    if "sparsity" in config:
        return f"unstructured {100 * config['sparsity']:.0f}% ({config['scope']})"
    return f"channels {100 * config['ratio']:.0f}% ({config['importance']}, {config['scope']})"


def _table_row(label: str, measured: dict, base: dict, pte: dict) -> str:
    pte_latency_ms = pte.get("latency_ms", {})
    all_threads = next((value for key, value in pte_latency_ms.items() if key != "1_thread"), None)
    return (
        f"| {label} | {measured['test_top1']:.2f}% | {measured['test_top1'] - base['test_top1']:+.2f} | "
        f"{measured['parameters'] / 1e6:.3f} M | {measured['nonzero_parameters'] / 1e6:.3f} M | {measured['macs'] / 1e6:.2f} M | "
        f"{measured['bytes'] / 1e6:.2f} MB | {measured['gzip_bytes'] / 1e6:.2f} MB | {measured['latency_ms']['1_thread']:.3f} ms | "
        f"{pte_latency_ms.get('1_thread', float('nan')):.3f} ms | {all_threads if all_threads is None else f'{all_threads:.3f} ms'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma list of experiment names (default: all)")
    parser.add_argument("--redo", action="store_true", help="measure finished experiments again")
    parser.add_argument("--structured-epochs", type=int, default=10)
    parser.add_argument("--unstructured-epochs", type=int, default=2)
    parser.add_argument("--kd-epochs", type=int, default=5)
    args = parser.parse_args()
    if not BASELINE.exists():
        sys.exit(f"{BASELINE} is missing; run 'python benchmarks/baseline.py --models mobilenet_v3_small:30' first")

    experiments = {f"channels{round(100 * ratio)}": lambda ratio=ratio: prune_row(
        f"channels{round(100 * ratio)}", ChannelPruneConfig(ratio=ratio), args.structured_epochs, 0.05) for ratio in STRUCTURED}
    experiments |= {f"unstructured{round(100 * sparsity)}": lambda sparsity=sparsity: prune_row(
        f"unstructured{round(100 * sparsity)}", UnstructuredPruneConfig(sparsity=sparsity), args.unstructured_epochs, 0.01)
        for sparsity in UNSTRUCTURED}
    experiments["kd_alone"] = lambda: kd_row("kd_alone", args.kd_epochs, None)
    experiments["kd_from_baseline"] = lambda: kd_row("kd_from_baseline", args.kd_epochs, BASELINE)
    chosen = [name for name in args.only.split(",") if name] or list(experiments)

    results = load_results("compress")
    results["machine"] = machine()
    results.setdefault("rows", {})
    if "baseline_pte" not in results or args.redo:
        results["baseline_pte"] = pte_latency(BASELINE)
        save_results("compress", results)
    for name in chosen:
        if name in results["rows"] and not args.redo:
            print(f"{name}: already measured, skipping")
            continue
        print(f"== {name}")
        results["rows"][name] = experiments[name]()
        save_results("compress", results)
        replace_doc_section("compress", render(results))
    replace_doc_section("compress", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
