"""Compression benchmark I on the Fashion-MNIST MobileNetV3-Small baseline: distillation and pruning.

    python benchmarks/compress.py [--baseline BEST.pt] [--runs-dir DIR] [--train-subset N] [--only channels50,kd_alone]
                                  [--threads 1] [--remeasure-latency]

(a) KD gain: MobileNetV3-Small trained alone vs distilled from the baseline checkpoint, same epochs.
(b) Unstructured 30/50/70/90% and structured (channel) 25/50/70% pruning, each fine-tuned with
    the unpruned model as teacher: parameters, MACs, file and gzip size, eager and .pte fp32
    latency (fresh process, 1 thread and all cores), test top-1 on all 10,000 test images.

Fine-tuning and training use the baseline's data (--train-subset as it was trained). Each experiment writes
<runs-dir>/<name>/ and its row into
benchmarks/results/compress.json as soon as it finishes; a rerun skips finished rows
(delete the row or pass --redo to measure again). Experiments may run in parallel processes
(--only, --threads 1); --remeasure-latency then times every finished model again on a quiet
machine, so no latency in the table was taken while another job was training. Then the
"compress" section of docs/benchmarks.md is rewritten from the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import load_results, provenance, provenance_line, replace_doc_section, run_stage, save_results  # noqa: E402
from udacisense.checkpoint import load_model  # noqa: E402
from udacisense.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from udacisense.deploy.bench import bench_artifact, thread_counts, thread_label  # noqa: E402
from udacisense.errors import TrainingFailed  # noqa: E402
from udacisense.formats.executorch import export_pte  # noqa: E402
from udacisense.health import HINT  # noqa: E402
from udacisense.profile import measure_latency  # noqa: E402
from udacisense.techniques.channels import ChannelPruneConfig  # noqa: E402
from udacisense.techniques.prune import UnstructuredPruneConfig  # noqa: E402
from udacisense.train import train_run  # noqa: E402

BASELINE = Path("runs/benchmarks/baseline_mobilenet_v3_small/best.pt")
RUNS = Path("runs/benchmarks/compress")


class Setup(NamedTuple):
    """What every experiment shares: the baseline it starts from, where runs go, the data keys, training threads."""

    baseline: Path
    runs: Path
    data: dict
    threads: int | None
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


def prune_row(setup: Setup, name: str, config, epochs: int, lr: float) -> dict:
    """The prune_channels or prune_unstructured stage, fine-tuned with the unpruned model as teacher."""
    kind = "prune_channels" if isinstance(config, ChannelPruneConfig) else "prune_unstructured"
    stage = {"stage": kind, **config.model_dump(mode="json"), "fine_tune": {"epochs": epochs, "lr": lr, "schedule": "cosine"},
             "distill": {"teacher": "self"}}
    described = {"config": config.model_dump(mode="json"),
                 "fine_tune": {"epochs": epochs, "lr": lr, "schedule": "cosine", "distill": "unpruned model, T=4, alpha=0.7"}}
    try:
        result = run_stage(name, setup.runs, setup.baseline, stage, threads=setup.threads, data=setup.data)
    except TrainingFailed as error:  # the stage's own check stopped a model at chance: that is this row's result
        return described | {"failed": str(error).removesuffix(f"; {HINT}")}
    record = result["stages"][0]
    return described | {
        "before": _strip(result["baseline"]["metrics"]),
        "after": _strip(record["metrics"]),
        "pte_after": pte_latency(Path(record["checkpoint"])),
        "run": result["run"],
        "checkpoint": record["checkpoint"],
    }


def remeasure_latency(results: dict, baseline_checkpoint: Path) -> None:
    """Time the baseline and every pruned model again (eager in-process, .pte in a fresh process)."""
    baseline, _ = load_model(baseline_checkpoint)
    input_shape = (1, 1, 28, 28)
    base_latency = eager_latency(baseline, input_shape)
    results["baseline_pte"] = pte_latency(baseline_checkpoint)
    for row in results["rows"].values():
        if "run" not in row:
            continue
        checkpoint = Path(row.get("checkpoint", Path(row["run"]) / "model.pt"))
        model, _ = load_model(checkpoint)
        row["before"]["latency_ms"] = base_latency
        row["after"]["latency_ms"] = eager_latency(model, input_shape)
        row["pte_after"] = pte_latency(checkpoint)


def eager_latency(model, input_shape: tuple[int, ...]) -> dict:
    return {thread_label(threads): measure_latency(model, input_shape, threads)["p50_ms"] for threads in thread_counts()}


def kd_row(setup: Setup, name: str, epochs: int, distilled: bool) -> dict:
    """MobileNetV3-Small trained alone, or as a fresh student of the baseline (the distill stage), for the same epochs."""
    train = TrainConfig(epochs=epochs, threads=setup.threads)
    if distilled:
        stage = {"stage": "distill", "teacher": "baseline", "student": {"model": "mobilenet_v3_small"}, "train": train.model_dump(mode="json")}
        record = run_stage(name, setup.runs, setup.baseline, stage, threads=setup.threads, data=setup.data)["stages"][0]
        return {"epochs": epochs, "teacher": str(setup.baseline), "test_top1": record["metrics"]["test_top1"], "train_seconds": record["seconds"]}
    config = RunConfig(name=name, runs_dir=setup.runs, data=DataConfig(**setup.data), model=ModelConfig(name="mobilenet_v3_small"), train=train)
    resume = (setup.runs / name / "last.pt").exists()
    summary = train_run(config, resume=resume, overwrite=not resume)
    return {"epochs": epochs, "teacher": None, "test_top1": summary["test_top1"], "train_seconds": summary["train_seconds"]}


def _strip(measured: dict) -> dict:
    return {key: value for key, value in measured.items() if key not in ("layers", "per_class_accuracy", "confusion_matrix")}


def render(results: dict) -> str:
    """The docs section from the stored results."""
    data = ", ".join(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}" for key, value in results["data"].items())
    lines = [
        "### 3.1 Distillation, channel pruning, unstructured pruning",
        "",
        f"{provenance_line(results)} Source: `{results['baseline']}`; fine-tuning and training on its data "
        f"({data or 'the whole training split'}). Test top-1 on all 10,000 test images; latency at batch 1, p50, eager in-process "
        "and `.pte` fp32 (XNNPACK) in a fresh process.",
    ]
    rows = results.get("rows", {})
    baseline = next((row for row in rows.values() if "before" in row), None)
    if baseline:
        base, base_pte = baseline["before"], results.get("baseline_pte", {})
        lines += [
            "",
            "| model | fine-tune | top-1 | Δ pt | params | non-zero | MACs | file | gzip | eager 1T | `.pte` 1T | `.pte` all |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            _table_row("baseline (fp32)", "—", base, base, base_pte),
        ]
        pruned = [row for row in rows.values() if "config" in row]
        pruned.sort(key=lambda row: (_unstructured(row), row["config"]["ratio"], row["fine_tune"]["epochs"]))
        for row in pruned:
            if "failed" in row:
                lines.append(f"| {_label(row)} | {row['fine_tune']['epochs']} ep | **failed**: {row['failed']} |" + " |" * 9)
            else:
                lines.append(_table_row(_label(row), f"{row['fine_tune']['epochs']} ep", row["after"], base, row["pte_after"]))
    channels50 = rows.get("channels50_30ep") or rows.get("channels50")
    if channels50 and baseline:
        after, base_pte = channels50["after"], results.get("baseline_pte", {}).get("latency_ms", {})
        drop = base["test_top1"] - after["test_top1"]
        macs_cut = base["macs"] / after["macs"]
        pte_speedup = base_pte.get("1_thread", float("nan")) / channels50["pte_after"]["latency_ms"]["1_thread"]
        lines += [
            "",
            f"50% of the channels, distilled from the unpruned model for {channels50['fine_tune']['epochs']} epochs: "
            f"{-drop:+.2f} pt, {macs_cut:.2f}x fewer MACs, `.pte` {pte_speedup:.2f}x faster at 1 thread.",
        ]
    kd = {name: row for name, row in rows.items() if name.startswith("kd_")}
    if kd:
        lines += ["", "| knowledge distillation | epochs | teacher | test top-1 | train time |", "|---|---|---|---|---|"]
        for name, row in kd.items():
            teacher = "the baseline" if row["teacher"] else "—"
            lines.append(f"| {name} | {row['epochs']} | {teacher} | {row['test_top1']:.2f}% | {row['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def _unstructured(row: dict) -> bool:
    """A prune_unstructured row (a channel-pruning config ranks channels by an importance)."""
    return "importance" not in row["config"]


def _label(row: dict) -> str:
    config = row["config"]
    if _unstructured(row):
        return f"unstructured {100 * config['ratio']:.0f}% ({config['scope']})"
    return f"channels {100 * config['ratio']:.0f}% ({config['importance']}, {config['scope']})"


def _table_row(label: str, fine_tune: str, measured: dict, base: dict, pte: dict) -> str:
    pte_latency_ms = pte.get("latency_ms", {})
    all_threads = next((value for key, value in pte_latency_ms.items() if key != "1_thread"), None)
    return (
        f"| {label} | {fine_tune} | {measured['test_top1']:.2f}% | {measured['test_top1'] - base['test_top1']:+.2f} | "
        f"{measured['parameters'] / 1e6:.3f} M | {measured['nonzero_parameters'] / 1e6:.3f} M | {measured['macs'] / 1e6:.2f} M | "
        f"{measured['bytes'] / 1e6:.2f} MB | {measured['gzip_bytes'] / 1e6:.2f} MB | {measured['latency_ms']['1_thread']:.3f} ms | "
        f"{pte_latency_ms.get('1_thread', float('nan')):.3f} ms | {all_threads if all_threads is None else f'{all_threads:.3f} ms'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the fp32 checkpoint every experiment starts from")
    parser.add_argument("--runs-dir", type=Path, default=RUNS, help="where the run folders go")
    parser.add_argument("--train-subset", type=int, help="train and fine-tune on this many images (as the baseline was trained)")
    parser.add_argument("--only", default="", help="comma list of experiment names (default: all)")
    parser.add_argument("--redo", action="store_true", help="measure finished experiments again")
    parser.add_argument("--structured-epochs", type=int, default=10)
    parser.add_argument("--unstructured-epochs", type=int, default=2)
    parser.add_argument("--kd-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, help="training threads (default: all cores)")
    parser.add_argument("--remeasure-latency", action="store_true", help="re-time all finished models, then exit")
    args = parser.parse_args()
    if not args.baseline.exists():
        sys.exit(f"{args.baseline} is missing; run 'python benchmarks/baseline.py --models mobilenet_v3_small:30' first, or pass --baseline")

    setup = Setup(args.baseline, args.runs_dir, {"train_subset": args.train_subset} if args.train_subset else {}, args.threads)
    experiments = {f"channels{round(100 * ratio)}": lambda ratio=ratio: prune_row(
        setup, f"channels{round(100 * ratio)}", ChannelPruneConfig(ratio=ratio), args.structured_epochs, 0.05) for ratio in STRUCTURED}
    experiments["channels50_30ep"] = lambda: prune_row(setup, "channels50_30ep", ChannelPruneConfig(ratio=0.5), 30, 0.05)
    experiments |= {f"unstructured{round(100 * ratio)}": lambda ratio=ratio: prune_row(
        setup, f"unstructured{round(100 * ratio)}", UnstructuredPruneConfig(ratio=ratio), args.unstructured_epochs, 0.01)
        for ratio in UNSTRUCTURED}
    experiments["kd_alone"] = lambda: kd_row(setup, "kd_alone", args.kd_epochs, distilled=False)
    experiments["kd_from_baseline"] = lambda: kd_row(setup, "kd_from_baseline", args.kd_epochs, distilled=True)
    chosen = [name for name in args.only.split(",") if name] or list(experiments)

    results = load_results("compress")
    if results.get("baseline", str(args.baseline)) != str(args.baseline) or results.get("data", setup.data) != setup.data:
        sys.exit(f"benchmarks/results/compress.json holds rows of {results['baseline']} with data {results['data']}; "
                 "move it away to measure another baseline")
    results.setdefault("rows", {})
    if args.remeasure_latency:
        remeasure_latency(results, args.baseline)
        results["retimed"] = provenance()
        save_results("compress", results)
        replace_doc_section("compress", render(results))
        print(render(results))
        return
    results |= provenance() | {"baseline": str(args.baseline), "data": setup.data}
    if "baseline_pte" not in results or args.redo:
        results["baseline_pte"] = pte_latency(args.baseline)
        save_results("compress", results)
    for name in chosen:
        if name in results["rows"] and not args.redo:
            print(f"{name}: already measured, skipping")
            continue
        print(f"== {name}")
        row = experiments[name]()
        # a parallel run may have added rows
        results = load_results("compress") | {key: results[key] for key in ("command", "date", "commit", "machine", "baseline", "data")}
        results.pop("retimed", None)  # this row's timings are this run's, not the re-timing's
        results.setdefault("rows", {})[name] = row
        save_results("compress", results)
        replace_doc_section("compress", render(results))
    replace_doc_section("compress", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
