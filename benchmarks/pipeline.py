"""Pipeline benchmark: recipes/seed.yaml vs recipes/mobile.yaml at full length on Fashion-MNIST, plus the
plain peer path "onnxruntime static int8 of the baseline", all against the same fp32 baseline.

    python benchmarks/pipeline.py [--only seed,mobile,peer] [--baseline BEST.pt] [--runs-dir DIR] [--threads 1] [--retime] [--render]

Both recipes start from --baseline, by default the 30-epoch MobileNetV3-Small of benchmarks/baseline.py when it
exists (the recipes would train the same one: same model, data and 30-epoch schedule); seed's
teacher is the MobileNetV3-Large of benchmarks/baseline.py when it exists. Runs land in
--runs-dir/<recipe>/ (runs/benchmarks/pipeline/ by default; resumable: a rerun reuses finished stages); results in
benchmarks/results/pipeline.json, the Pareto plot in docs/img/pipeline_pareto.png and the
"pipeline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, load_results, provenance, provenance_line, replace_doc_section, save_results  # noqa: E402

RUNS = Path("runs/benchmarks/pipeline")
BASELINE = Path("runs/benchmarks/baseline_mobilenet_v3_small/best.pt")
LARGE_TEACHER = Path("runs/benchmarks/baseline_mobilenet_v3_large/best.pt")
RECIPES = ("seed", "mobile")


def run_recipe(name: str, baseline: Path, runs: Path, threads: int | None, retime: bool = False, settings: Sequence[str] = ()) -> dict:
    """``udacisense run`` in its own process (as a user would), resuming whatever finished before."""
    overrides = [option for setting in settings for option in ("--set", setting)]
    if baseline.is_file():
        overrides += ["--set", f"baseline.checkpoint={baseline.resolve()}"]
    if name == "seed" and LARGE_TEACHER.is_file():
        overrides += ["--set", f"distill.teacher={LARGE_TEACHER}"]
    if threads:
        overrides += ["--set", f"threads={threads}"]
    command = [sys.executable, "-m", "udacisense.cli", "run", name, "--runs-dir", str(runs),
               "--resume", *overrides, *(["--retime"] if retime else [])]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads((runs / name / "result.json").read_text())


def peer_row(baseline_run: Path) -> dict:
    """The plain path a team would try first: onnxruntime's static int8 (QDQ) of the fp32 baseline, nothing else."""
    import torch

    from udacisense.checkpoint import load_model
    from udacisense.formats import FORMATS
    from udacisense.measure import measure_artifact, source_logits
    from udacisense.pipeline.recipe import load_recipe
    from udacisense.pipeline.runner import dataset_for_recipe

    result = json.loads((baseline_run / "result.json").read_text())
    checkpoint = Path(result["baseline"]["checkpoint"])
    model, payload = load_model(checkpoint)
    dataset = dataset_for_recipe(load_recipe(baseline_run / "recipe.yaml").recipe.data, payload["input"])
    shape = tuple(payload["input"]["shape"])
    folder = baseline_run.parent / "peer_onnx_int8"
    folder.mkdir(parents=True, exist_ok=True)
    path, info = FORMATS.get("onnx-int8").export(model, torch.zeros(shape), folder, lambda: dataset.calibration_batches(256))
    images, labels = dataset.whole("test")
    return {"artifact": measure_artifact("onnx-int8", path, shape, images, labels, source_logits(model, images)), "export": info,
            "baseline": result["baseline"]["metrics"]}


def render(results: dict) -> str:
    """The docs section: every pipeline's shipped artifacts against the one fp32 baseline, and the Done-when check."""
    from udacisense.io import atomic_write
    from udacisense.report.markdown import run_points, signed_points
    from udacisense.report.plots import pareto_plot

    rows = results.get("rows", {})
    runs = {name: json.loads((Path(rows[name]["run"]) / "result.json").read_text()) for name in RECIPES if name in rows}
    if not runs:
        return "No pipeline results yet: run `python benchmarks/pipeline.py`."
    anchor = runs.get("mobile") or next(iter(runs.values()))
    base = anchor["baseline"]["metrics"]
    eager = base["eager_latency"]["1_thread"]["p50_ms"]
    pte = anchor["baseline"]["references"].get("pte", {}).get("latency_ms", {}).get("1_thread")
    table = ["| pipeline | artifact | runtime | size MB | % of fp32 checkpoint | p50 1 thread ms | × faster than eager | "
             "× faster than fp32 `.pte` | top-1 % | Δ pt |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, file: str, runtime: str, size: float, latency: float, top1: float) -> str:
        versus_pte = f"{pte / latency:.2f}" if pte else "-"
        return (f"| {label} | `{file}` | {runtime} | {size / 1e6:.3f} | {100 * size / base['bytes']:.1f}% | {latency:.3f} | "
                f"{eager / latency:.1f} | {versus_pte} | {top1:.2f} | {signed_points(top1 - base['test_top1'])} |")

    table.append(row("fp32 baseline (eager)", Path(anchor["baseline"]["checkpoint"]).name, "pytorch", base["bytes"], eager, base["test_top1"]))
    for kind, reference in anchor["baseline"]["references"].items():
        table.append(row("fp32 baseline, exported", reference["file"], kind, reference["bytes"], reference["latency_ms"]["1_thread"], reference["top1"]))
    points = [point for point in run_points(anchor) if point["group"] in ("baseline", "reference")]
    if "peer" in rows:
        peer = rows["peer"]["artifact"]
        table.append(row("peer: onnxruntime static int8", peer["file"], "onnxruntime", peer["bytes"], peer["latency_ms"]["1_thread"], peer["top1"]))
        points.append({"label": "peer onnx-int8", "group": "reference", "megabytes": peer["bytes"] / 1e6,
                       "latency_ms": peer["latency_ms"]["1_thread"], "top1": peer["top1"]})
    for name, result in runs.items():
        for kind, entry in result["deploy"]["artifacts"].items():
            check = entry["validation"]
            table.append(row(f"**{name}.yaml**" + (" (targets)" if kind == result["primary"] else ""), entry["file"], entry["runtime"],
                             entry["bytes"], entry["latency"]["1_thread"]["p50_ms"], check["top1"]))
        points += [point for point in run_points(result) if point["group"] == "artifact"]
    png = pareto_plot(points, "Fashion-MNIST test set: accuracy against size and latency (batch 1, 1 thread)")
    atomic_write(ROOT / "docs" / "img" / "pipeline_pareto.png", lambda handle: handle.write(png))

    notes = []
    for name, result in runs.items():
        met = [f"{row['target']} {'met' if row['passed'] else 'MISSED'}" for row in result["targets"]]
        stages = " → ".join(f"{stage['id']} ({stage['seconds'] / 60:.0f} min)" for stage in result["stages"])
        notes.append(f"- `{name}.yaml` targets on `{result['primary']}`: {', '.join(met)}. Stages: {stages}.")
    if "mobile" in runs and "seed" in runs:
        mobile, seed = (runs[name]["deploy"]["artifacts"][runs[name]["primary"]] for name in ("mobile", "seed"))
        m_ms, s_ms = mobile["latency"]["1_thread"]["p50_ms"], seed["latency"]["1_thread"]["p50_ms"]
        notes.append(f"- `mobile.yaml` against `seed.yaml`: {seed['bytes'] / mobile['bytes']:.1f}x smaller, {s_ms / m_ms:.1f}x faster, "
                     f"{mobile['validation']['top1'] - seed['validation']['top1']:+.2f} pt top-1.")
    return "\n".join([
        "### seed.yaml and mobile.yaml on one baseline", "",
        f"{provenance_line(results)} Every row is measured "
        f"in its runtime on all {anchor['deploy']['test_images']:,} Fashion-MNIST test images; latency is the median at batch 1 in a "
        f"fresh process. All rows share one fp32 baseline: `{rows[next(iter(runs))]['baseline']}` ({baseline_training(anchor)}).", "",
        *table, "", "![Pareto: accuracy against size and latency](img/pipeline_pareto.png)", "", *notes,
    ])


def baseline_training(result: dict) -> str:
    """How the shared baseline was trained: 'mobilenet_v3_small, 150 epochs (best epoch 148), 95.02% test top-1'."""
    import yaml

    from udacisense.checkpoint import load_checkpoint

    checkpoint = Path(result["baseline"]["checkpoint"])
    config = checkpoint.parent / "config.yaml"  # beside a 'udacisense train' checkpoint
    epochs = (yaml.safe_load(config.read_text()) or {}).get("train", {}).get("epochs", "?") if config.is_file() else "?"
    payload = load_checkpoint(checkpoint)
    return f"{payload['model']['name']}, {epochs} epochs (best epoch {payload.get('epoch', '?')}), {result['baseline']['metrics']['test_top1']:.2f}% test top-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="seed,mobile,peer", help="comma list of seed, mobile, peer")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the fp32 MobileNetV3-Small checkpoint both recipes start from")
    parser.add_argument("--runs-dir", type=Path, default=RUNS, help="where the run folders go (outside the work tree for long runs)")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE",
                        help="a recipe override for both recipes, e.g. data.train_subset=12000 (as the baseline was trained)")
    parser.add_argument("--threads", type=int, help="threads for training and measuring (default: all cores)")
    parser.add_argument("--retime", action="store_true", help="re-measure every latency of finished runs (on a quiet machine)")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section from stored results")
    args = parser.parse_args()
    chosen = [] if args.render else [name for name in args.only.split(",") if name]
    baseline = str(args.baseline)
    for name in chosen:
        if name in RECIPES:
            result = run_recipe(name, args.baseline, args.runs_dir, args.threads, args.retime, args.settings)
            row = {"run": result["run"], "targets": result["targets"], "primary": result["primary"]}
        elif name == "peer":
            row = peer_row(args.runs_dir / "mobile")
        else:
            sys.exit(f"unknown part '{name}'; choose from seed, mobile, peer")
        results = load_results("pipeline")  # a parallel invocation may have added rows meanwhile
        if args.retime:  # the same runs, timed again: the measuring command stays, and this one is named beside it
            results["retimed"] = provenance()
        else:
            results |= provenance()
            results.pop("retimed", None)
        # every row compares with one baseline: rows measured from another one are dropped, not mixed in
        results["rows"] = {key: old for key, old in results.get("rows", {}).items() if old.get("baseline") == baseline}
        results["rows"][name] = row | {"baseline": baseline}
        save_results("pipeline", results)
    text = render(load_results("pipeline"))
    replace_doc_section("pipeline", text)
    print(text)


if __name__ == "__main__":
    main()
