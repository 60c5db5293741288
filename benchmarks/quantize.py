"""Compression benchmark II: quantization and low-rank on the MobileNetV3-Small baseline and its 50%-channel-pruned copy.

    python benchmarks/quantize.py [--baseline BEST.pt] [--pruned MODEL.pt] [--runs-dir DIR] [--train-subset N]
                                  [--only baseline:qat,pruned:static] [--threads 1] [--remeasure-latency]

Rows: dynamic int8 (torch.ao, TorchScript-lite, the seed project's way), static PT2E int8 with the
histogram and min-max observers, QAT (2 epochs, fp32 model as teacher, BatchNorm and observers
frozen in the last epoch), mixed precision (sensitive layers kept fp32 until the validation drop
is <= 0.1 pt) and low-rank SVD (90% energy, 2 epochs distilled fine-tuning, then fp32 .pte).
Every accuracy is measured through the exported artifact in its runtime on all 10,000 test
images; every latency in a fresh process at batch 1. The pruned source is compress.py's channels50_30ep model.
Fine-tuning uses the baseline's data (--train-subset as it was trained). Results: benchmarks/results/quantize.json
and the "quantize" section of docs/benchmarks.md; finished rows are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_results, provenance, provenance_line, replace_doc_section, run_stage, save_results  # noqa: E402
from udacisense.config import TrainConfig  # noqa: E402
from udacisense.errors import TrainingFailed  # noqa: E402
from udacisense.formats import FORMATS  # noqa: E402
from udacisense.techniques.quantize import QuantizeConfig  # noqa: E402

BASELINE = Path("runs/benchmarks/baseline_mobilenet_v3_small/best.pt")
PRUNED = Path("runs/benchmarks/compress/channels50_30ep/stages/01_prune_channels/model.pt")
RUNS = Path("runs/benchmarks/quantize")


class Setup(NamedTuple):
    """What every row shares: the source checkpoints by name, where runs go, the data keys, training threads."""

    sources: dict[str, Path]
    runs: Path
    data: dict
    threads: int | None


def quantize_row(setup: Setup, source: str, name: str, config: QuantizeConfig, **stage_options) -> dict:
    """The quantize stage on the source; the fp32 reference is the source exported to the same runtime by the runner."""
    stage = {"stage": "quantize", **config.model_dump(mode="json"), **stage_options}
    try:
        result = run_stage(f"{source}_{name}", setup.runs, setup.sources[source], stage, threads=setup.threads, data=setup.data)
    except TrainingFailed as error:  # the stage's own checks refused its artifact: that is this row's result
        return {"method": config.method, "failed": str(error)}
    record, baseline = result["stages"][0], result["baseline"]
    metrics, info = record["metrics"], record["info"]
    # files relative to the run folder, where remeasure_latency looks for them
    artifact = {"file": str(Path(record["artifacts"][metrics["runtime"]]).relative_to(result["run"])), "bytes": metrics["bytes"],
                "top1": metrics["test_top1"], "agreement": metrics["agreement"], "latency_ms": metrics["latency_ms"], "memory": metrics["memory"]}
    reference = baseline["references"][FORMATS.get(metrics["runtime"]).reference]
    fp32 = reference | {"file": str(Path("stages/00_baseline/reference") / reference["file"])}
    row = {"method": config.method, "source_top1": baseline["metrics"]["test_top1"], "fp32_artifact": fp32, "artifact": artifact,
           "top1_drop": baseline["metrics"]["test_top1"] - artifact["top1"], "size_vs_fp32_artifact": artifact["bytes"] / fp32["bytes"],
           "float_layers": info.get("float_layers", []), "run": result["run"]}
    if "export" in info:
        row["delegated_share"] = info["export"]["delegated_share"]
        row["not_delegated_ops"] = info["export"]["not_delegated_ops"]
    if "dynamic" in info:
        row["dynamic"] = info["dynamic"] | {"state_dict_bytes": info["state_dict_bytes"]}
    if "history" in info:  # the quantization-aware training's epochs
        row["qat_history"] = info["history"]
    return row


def lowrank_row(setup: Setup, source: str) -> dict:
    """The factorize stage (90% energy, 2 epochs distilled fine-tuning), shipped as an fp32 .pte."""
    stage = {"stage": "factorize", "energy": 0.9, "fine_tune": {"epochs": 2, "lr": 0.01, "schedule": "cosine"}, "distill": {"teacher": "self"}}
    result = run_stage(f"{source}_lowrank", setup.runs, setup.sources[source], stage, threads=setup.threads, formats=("pte",), data=setup.data)
    record, entry = result["stages"][0], result["deploy"]["artifacts"]["pte"]
    artifact = {"file": str(Path("deploy") / entry["file"]), "bytes": entry["bytes"], "top1": entry["validation"]["top1"],
                "agreement": entry["validation"]["agreement"], "memory": entry["memory"],
                "latency_ms": {label: timing["p50_ms"] for label, timing in entry["latency"].items()}}
    before, after = result["baseline"]["metrics"], record["metrics"]
    return {"method": "lowrank", "run": result["run"], "factorized": len(record["info"]["factorized"]), "skipped": len(record["info"]["skipped"]),
            "source_top1": before["test_top1"], "parameters": [before["parameters"], after["parameters"]],
            "macs": [before["macs"], after["macs"]], "artifact": artifact}


def remeasure_latency(results: dict) -> None:
    """Time every row's artifacts again in fresh processes, on a machine with nothing else running."""
    from udacisense.deploy.bench import bench_artifact

    for row in results.get("rows", {}).values():
        for key in ("fp32_artifact", "artifact"):
            if key not in row:
                continue
            artifact = row[key]
            kind = "ptl" if artifact["file"].endswith(".ptl") else "pte-int8" if "int8" in Path(artifact["file"]).name else "pte"
            bench = bench_artifact(kind, Path(row["run"]) / artifact["file"], (1, 1, 28, 28))
            artifact["latency_ms"] = {label: timing["p50_ms"] for label, timing in bench["latency"].items()}
            artifact["memory"] = bench["memory"]


def render(results: dict) -> str:
    """The docs section from the stored results."""
    sources = "; ".join(f"{name} `{path}`" for name, path in results["sources"].items())
    lines = [
        "### 3.2 Quantization (static, QAT, mixed, dynamic) and factorization",
        "",
        f"{provenance_line(results)} Sources: {sources}. Top-1 through the exported artifact in its own runtime on all "
        "10,000 test images; latency at batch 1, p50, fresh process. Size and speed ratios are against the fp32 artifact "
        "of the same model in the same runtime.",
        "",
        "| source | technique | artifact | size | vs fp32 artifact | top-1 | Δ pt vs fp32 model | agreement | 1 thread | all threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results.get("rows", {}).items():
        source, technique = key.split(":")
        if "failed" in row:
            lines.append(f"| {source} | {technique} | **failed**: {row['failed']} |" + " |" * 7)
            continue
        artifact = row["artifact"]
        latency = artifact["latency_ms"]
        all_threads = next((value for label, value in latency.items() if label != "1_thread"), float("nan"))
        ratio = f"{100 * row['size_vs_fp32_artifact']:.1f}%" if "size_vs_fp32_artifact" in row else "—"
        drop = row["source_top1"] - artifact["top1"]
        lines.append(
            f"| {source} | {technique} | `{Path(artifact['file']).name}` | {artifact['bytes'] / 1e6:.2f} MB | {ratio} | {artifact['top1']:.2f}% | "
            f"{-drop:+.2f} | {artifact['agreement']:.2f}% | {latency['1_thread']:.3f} ms | {all_threads:.3f} ms |"
        )
    notes = []
    for key, row in results.get("rows", {}).items():
        if row.get("float_layers"):
            notes.append(f"- `{key}` kept in fp32: {', '.join(row['float_layers'])}.")
        if row.get("dynamic"):
            dynamic = row["dynamic"]
            notes.append(f"- `{key}`: {dynamic['note']}: {100 * dynamic['quantized_parameter_share']:.1f}% of the parameters; "
                         f"state dict {dynamic['state_dict_bytes']['fp32'] / 1e6:.2f} -> {dynamic['state_dict_bytes']['dynamic_int8'] / 1e6:.2f} MB.")
        if row.get("method") == "lowrank":
            notes.append(f"- `{key}`: {row['factorized']} layers factorized ({row['skipped']} skipped), parameters "
                         f"{row['parameters'][0]:,} -> {row['parameters'][1]:,}, MACs {row['macs'][0] / 1e6:.2f} M -> {row['macs'][1] / 1e6:.2f} M.")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the fp32 baseline checkpoint")
    parser.add_argument("--pruned", type=Path, default=PRUNED, help="its 50%%-channel-pruned model (compress.py's channels50_30ep)")
    parser.add_argument("--runs-dir", type=Path, default=RUNS, help="where the run folders go")
    parser.add_argument("--train-subset", type=int, help="fine-tune on this many images (as the baseline was trained)")
    parser.add_argument("--only", default="", help="comma list of source:technique (default: all)")
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--threads", type=int, help="training threads (default: all cores)")
    parser.add_argument("--remeasure-latency", action="store_true", help="re-time all finished artifacts, then exit")
    args = parser.parse_args()
    if args.remeasure_latency:
        results = load_results("quantize")
        remeasure_latency(results)
        results["retimed"] = provenance()
        save_results("quantize", results)
        replace_doc_section("quantize", render(results))
        print(render(results))
        return
    setup = Setup({"baseline": args.baseline, "pruned": args.pruned}, args.runs_dir,
                  {"train_subset": args.train_subset} if args.train_subset else {}, args.threads)
    sources = {name: str(path) for name, path in setup.sources.items()}
    stored = load_results("quantize")
    if stored.get("sources", sources) != sources:
        sys.exit(f"benchmarks/results/quantize.json holds rows of {stored['sources']}; move it away to measure other sources")

    def qat(source: str):
        train = TrainConfig(epochs=2, lr=0.002, schedule="cosine")
        config = QuantizeConfig(method="qat", freeze_batchnorm_epoch=2, freeze_observer_epoch=2)
        return quantize_row(setup, source, "qat", config, fine_tune=train.model_dump(mode="json"), distill={"teacher": "self"})

    experiments = {}
    for source in setup.sources:
        experiments[f"{source}:static"] = lambda source=source: quantize_row(setup, source, "static", QuantizeConfig())
        experiments[f"{source}:qat"] = lambda source=source: qat(source)
    experiments["baseline:dynamic"] = lambda: quantize_row(setup, "baseline", "dynamic", QuantizeConfig(method="dynamic"))
    experiments["baseline:static-minmax"] = lambda: quantize_row(setup, "baseline", "static_minmax", QuantizeConfig(observer="minmax"))
    experiments["baseline:mixed"] = lambda: quantize_row(setup, "baseline", "mixed", QuantizeConfig(), max_drop=0.1)
    experiments["baseline:lowrank"] = lambda: lowrank_row(setup, "baseline")
    chosen = [name for name in args.only.split(",") if name] or list(experiments)
    unknown = [name for name in chosen if name not in experiments]
    if unknown:
        sys.exit(f"unknown experiments {unknown}; known: {', '.join(experiments)}")

    for name in chosen:
        results = load_results("quantize")
        if name in results.get("rows", {}) and not args.redo:
            print(f"{name}: already measured, skipping")
            continue
        source = setup.sources[name.split(":")[0]]
        if not source.exists():
            sys.exit(f"{name}: {source} is missing; run benchmarks/baseline.py and compress.py first, or pass --baseline and --pruned")
        print(f"== {name}")
        row = experiments[name]()
        results = load_results("quantize")  # a parallel run may have added rows meanwhile
        results |= provenance() | {"sources": sources, "data": setup.data}
        results.pop("retimed", None)  # this row's timings are this run's
        results.setdefault("rows", {})[name] = row
        save_results("quantize", results)
        replace_doc_section("quantize", render(results))
    print(render(load_results("quantize")))


if __name__ == "__main__":
    main()
