"""Peers side by side: one fp32 baseline, every tool's int8 (and our pipelines) measured in one run on one machine.

    python benchmarks/peers.py --baseline BEST.pt [--runs-dir DIR] [--set data.train_subset=12000] [--budget-factor 2]
                               [--rounds 5] [--retime] [--render]

On the whole test split of the baseline's data, in each artifact's own runtime, with one latency harness (batch 1,
1 thread, --rounds alternating rounds, each artifact in a fresh process per round; the median of the rounds' p50 and
p90, and the spread of the p50s):

- the fp32 baseline as `.pte`, ONNX and `.tflite`;
- the baseline's plain post-training int8 by ExecuTorch (`pte-int8`), onnxruntime (static QDQ, `onnx-int8`) and
  LiteRT (`tflite-int8`), each calibrated on the same 256 training images;
- NNCF's post-training int8, and NNCF's accuracy-controlled int8 (`quantize_with_accuracy_control`, mobile.yaml's drop
  limit, on the validation split), both from the fp32 ONNX file and run by OpenVINO in a virtual environment of their
  own (benchmarks/peers/requirements.txt, created under --runs-dir; OpenVINO's telemetry opted out);
- `udacisense run mobile` (its shipped int8 `.pte`), and its pruned model as `.tflite-int8`;
- the most accurate point (on the validation split) of one `udacisense search mobile` under mobile.yaml's targets (top-1
  drop, size), given --budget-factor times mobile.yaml's time; no row when no point met them.

Every step is kept under --runs-dir/peers (outside the work tree for a long run): a rerun resumes, `--retime` times
again on a quiet machine. mobile.yaml's run and the search's go to --runs-dir/mobile and --runs-dir/search. Results:
benchmarks/results/peers.json, docs/img/peers_pareto.png and the "peers" section of docs/benchmarks.md.
`make benchmark-peers` first trains the baseline with `udacisense train` into runs/benchmarks/peers/baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, load_results, provenance, provenance_line, replace_doc_section, save_results  # noqa: E402

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "openvino_peer.py"
REQUIREMENTS = PEER_SCRIPT.parent / "requirements.txt"
CALIBRATION_IMAGES = 256
OURS = ("mobile.yaml", "mobile.yaml pruned, LiteRT int8", "search")
# (key, who made it, runtime, how): the table's rows, in its order
ROWS = (
    ("pte", "fp32 baseline", "ExecuTorch (XNNPACK)", "export"),
    ("onnx", "fp32 baseline", "onnxruntime", "export"),
    ("tflite", "fp32 baseline", "LiteRT (XNNPACK)", "export"),
    ("pte-int8", "ExecuTorch PTQ", "ExecuTorch (XNNPACK)", "export"),
    ("onnx-int8", "onnxruntime static QDQ", "onnxruntime", "export"),
    ("tflite-int8", "LiteRT PTQ", "LiteRT (XNNPACK)", "export"),
    ("nncf", "NNCF PTQ", "OpenVINO", "openvino"),
    ("nncf-ac", "NNCF accuracy control", "OpenVINO", "openvino"),
    ("mobile", "mobile.yaml", "ExecuTorch (XNNPACK)", "recipe"),
    ("mobile-tflite-int8", "mobile.yaml pruned, LiteRT int8", "LiteRT (XNNPACK)", "recipe"),
    ("search", "search", "ExecuTorch (XNNPACK)", "search"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="the fp32 checkpoint every row starts from (a `udacisense train` best.pt)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/peers"), help="where the runs, artifacts and the peers' venv go")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="a recipe override for mobile.yaml and the search alike, e.g. data.train_subset=12000")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="the search's time as a multiple of mobile.yaml's (at most 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (each artifact in a fresh process per round)")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per round")
    parser.add_argument("--retime", action="store_true", help="time every artifact again (on a quiet machine)")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section and plot from benchmarks/results/peers.json")
    args = parser.parse_args(argv)
    if not args.render and args.baseline is None:
        parser.error("--baseline is required (the checkpoint of `udacisense train`), unless --render")
    if not 0 < args.budget_factor <= 2:
        parser.error(f"--budget-factor {args.budget_factor:g}: give a factor in (0, 2]; the comparison allows the search at most twice mobile.yaml's time")
    if args.rounds < 1 or args.runs < 10:
        parser.error("--rounds must be at least 1 and --runs at least 10")
    return args


# --- the peers' virtual environment ----------------------------------------------------------------------------------

def peer_python(runs_dir: Path) -> Path:
    """The peers' venv (created, or recreated when requirements.txt changed) with OpenVINO's telemetry opted out."""
    venv = runs_dir / "peer-venv"
    stamp, wanted = venv / ".requirements-sha256", hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(wanted)
    # the documented opt-out: a consent file in the home folder that NNCF and OpenVINO both read
    subprocess.run([venv / "bin" / "opt_in_out", "--opt_out"], check=True, capture_output=True)
    return venv / "bin" / "python"


def openvino_peer(python: Path, *arguments: str) -> dict[str, Any]:
    """One command of benchmarks/peers/openvino_peer.py in a fresh process of the peers' venv; its JSON reply."""
    done = subprocess.run([str(python), str(PEER_SCRIPT), *arguments], capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"openvino_peer.py {arguments[0]} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- building the rows -----------------------------------------------------------------------------------------------

def same_run(path: Path, inputs: dict[str, Any]) -> None:
    """Record what a run folder's results come from; refuse to mix them with another baseline's or other settings'."""
    if path.is_file() and json.loads(path.read_text()) != inputs:
        raise SystemExit(f"{path.parent} holds a peer run of another baseline or other --set/--budget-factor ({path}); give another --runs-dir")
    path.write_text(json.dumps(inputs, indent=1))


def cached(path: Path, build) -> dict[str, Any]:
    """``build()``'s result, kept in ``path``: a finished step is never redone."""
    if path.is_file():
        return json.loads(path.read_text())
    result = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def export_row(kind: str, model, shape: tuple[int, ...], dataset, folder: Path, seconds_before: float = 0.0) -> dict[str, Any]:
    """``kind`` exported from ``model`` (int8 formats calibrated on the same 256 training images), timed."""
    import torch

    from udacisense.formats import FORMATS

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path, _ = FORMATS.get(kind).export(model, torch.zeros(shape), folder, lambda: dataset.calibration_batches(CALIBRATION_IMAGES))
    return {"kind": kind, "path": str(path), "seconds": seconds_before + time.perf_counter() - started}


def logits_of(row: dict[str, Any], images, work: Path, python: Path | None):
    """The row's artifact's logits on ``images`` in its own runtime, all cores."""
    import numpy as np

    from udacisense.deploy.runtime import load_runner, run_batches

    if row["kind"] != "openvino":
        return run_batches(load_runner(row["kind"], Path(row["path"]), threads=None), images).numpy()
    out = work / f"{Path(row['path']).parent.name}-logits.npy"
    openvino_peer(python, "logits", "--model", row["path"], "--images", str(work / "test.npy"), "--out", str(out))
    return np.load(out)


def artifact_bytes(row: dict[str, Any]) -> int:
    """The file's size; an OpenVINO model is its .xml and .bin together."""
    path = Path(row["path"])
    return sum(part.stat().st_size for part in (path, path.with_suffix(".bin")) if part.is_file())


def build_rows(args: argparse.Namespace, python: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every row's artifact (built once) and its accuracy, agreement and size on the whole test split."""
    import numpy as np

    from search import recipe_run, udacisense
    from udacisense.checkpoint import load_model
    from udacisense.io import sha256_of
    from udacisense.measure import source_logits
    from udacisense.pipeline.recipe import load_recipe
    from udacisense.pipeline.runner import artifact_file, dataset_for_recipe, finished_result, stage_folder
    from udacisense.pipeline.search import front_runs

    flags = [item for override in args.overrides for item in ("--set", override)]
    baseline = args.baseline.resolve()
    work = args.runs_dir / "peers"
    work.mkdir(parents=True, exist_ok=True)
    same_run(work / "inputs.json", {"baseline_sha256": sha256_of(baseline), "overrides": args.overrides, "budget_factor": args.budget_factor})
    hand = recipe_run("mobile", baseline, args.runs_dir, flags)
    hand_run = args.runs_dir / "mobile"
    hand_seconds = max(sum(stage["seconds"] for stage in hand["stages"]) + hand["baseline"]["seconds"], hand["seconds_this_invocation"])

    recipe = load_recipe(hand_run / "recipe.yaml").recipe
    max_drop = recipe.targets.max_accuracy_drop  # mobile.yaml's targets are the search's constraints
    max_megabytes = (1 - recipe.targets.size_reduction) * hand["baseline"]["metrics"]["bytes"] / 1e6
    model, payload = load_model(baseline)
    dataset = dataset_for_recipe(recipe.data, payload["input"])
    shape = tuple(payload["input"]["shape"])
    images, labels = dataset.whole("test")
    if not (work / "test.npy").is_file():
        np.save(work / "test.npy", images.numpy())
        np.save(work / "calibration.npy", np.concatenate([batch.numpy() for batch in dataset.calibration_batches(CALIBRATION_IMAGES)]))
        held_out, held_labels = dataset.whole("val")
        np.savez(work / "validation.npz", images=held_out.numpy(), labels=held_labels.numpy())

    built: dict[str, dict[str, Any]] = {}
    for kind in ("pte", "onnx", "tflite", "pte-int8", "onnx-int8", "tflite-int8"):
        built[kind] = cached(work / "rows" / f"{kind}.json", lambda kind=kind: export_row(kind, model, shape, dataset, work / kind))
    for key, extra in (("nncf", []), ("nncf-ac", ["--validation", str(work / "validation.npz"), "--max-drop", f"{max_drop / 100:g}"])):
        def quantize(key: str = key, extra: list[str] = extra) -> dict[str, Any]:
            reply = openvino_peer(python, "quantize", "--onnx", built["onnx"]["path"], "--calibration", str(work / "calibration.npy"),
                                  "--out", str(work / key), *extra)
            return {"kind": "openvino", "path": str(work / key / "model.xml"), "seconds": built["onnx"]["seconds"] + reply["seconds"]}
        built[key] = cached(work / "rows" / f"{key}.json", quantize)

    built["mobile"] = {"kind": "pte-int8", "path": str(artifact_file(hand_run, hand, "pte-int8")), "seconds": hand_seconds}
    prune = next(stage for stage in hand["stages"] if stage["stage"] == "prune_channels")
    pruned, _ = load_model(stage_folder(hand_run, hand["stages"].index(prune) + 1, prune["id"]) / "model.pt")
    built["mobile-tflite-int8"] = cached(work / "rows" / "mobile-tflite-int8.json", lambda: export_row(
        "tflite-int8", pruned, shape, dataset, work / "mobile-tflite-int8", seconds_before=prune["seconds"]))

    search_dir = args.runs_dir / "search"
    budget_file = work / "search.budget"  # fixed when the search first starts: a resumed one keeps it
    if not budget_file.is_file():
        budget_file.write_text(f"{args.budget_factor * hand_seconds:.0f}\n")
    budget = float(budget_file.read_text())
    done = work / "search.done"  # one uninterrupted search: once it has ended, a rerun reads it and never resumes it
    if not done.is_file():
        status = udacisense("search", "mobile", "--checkpoint", str(baseline), "--budget", f"{budget:.0f}s", "--max-drop", f"{max_drop:g}",
                            "--max-size-mb", f"{max_megabytes:.6f}", "--name", "search", "--runs-dir", str(args.runs_dir), *flags,
                            *(["--resume"] if search_dir.is_dir() else []))
        if status not in (0, 1) or not (search_dir / "search" / "pareto.json").is_file():  # 1: it ended, and no point met the targets
            raise SystemExit(f"the search in {search_dir} failed (exit status {status}); see its output above")
        done.write_text("ended\n")
    pareto = json.loads((search_dir / "search" / "pareto.json").read_text())
    search = {"trials": pareto["trial_count"], "seconds": pareto["elapsed_seconds"], "feasible_found": pareto["feasible_found"],
              "failed": [f"{failure['summary']}: {failure['error']}" for failure in pareto["failed"]]}
    if pareto["feasible_found"]:  # the front's most accurate point as the search ranks them (validation split, never the test split)
        best = max(pareto["front"], key=lambda point: point["top1"])
        run = dict(front_runs(search_dir))[best["trial"]]
        kind = best["trial_recipe"]["export"]["formats"][0]
        built["search"] = {"kind": kind, "path": str(artifact_file(run, finished_result(run), kind)), "seconds": pareto["elapsed_seconds"],
                           "summary": best["summary"]}

    reference = source_logits(model, images).argmax(1).numpy()
    truth = labels.numpy()
    for key, row in built.items():
        predicted = np.argmax(logits_of(row, images, work, python), axis=1)
        row |= {"top1": 100 * float((predicted == truth).mean()), "agreement": 100 * float((predicted == reference).mean()),
                "bytes": artifact_bytes(row)}
    context = {"shape": list(shape), "baseline": str(args.baseline), "baseline_top1": 100 * float((reference == truth).mean()),
               "test_images": len(truth), "mobile_seconds": hand_seconds, "budget_seconds": budget, "budget_factor": args.budget_factor, "max_drop": max_drop,
               "max_megabytes": max_megabytes, "data": recipe.data.model_dump(mode="json", exclude_defaults=True), "search": search}
    return built, context


# --- timing ----------------------------------------------------------------------------------------------------------

def time_once(row: dict[str, Any], shape: list[int], runs: int, python: Path) -> dict[str, float]:
    """One fresh-process probe of the row's artifact at batch 1, 1 thread: p50, p90 and the model's memory."""
    if row["kind"] == "openvino":
        reply = openvino_peer(python, "time", "--model", row["path"], "--shape", ",".join(map(str, shape)), "--runs", str(runs))
        return {"p50_ms": reply["p50_ms"], "p90_ms": reply["p90_ms"], "model_bytes": reply["model_bytes"], "precision": reply["precision"]}
    from udacisense.deploy.bench import run_probe

    probe = run_probe(row["kind"], Path(row["path"]), tuple(shape), threads=1, runs=runs)
    return {"p50_ms": probe["latency"]["p50_ms"], "p90_ms": probe["latency"]["p90_ms"], "model_bytes": probe["memory"]["model_bytes"]}


def time_rows(rows: dict[str, dict[str, Any]], shape: list[int], rounds: int, runs: int, python: Path) -> dict[str, dict[str, Any]]:
    """Alternating rounds (every artifact once per round, in the table's order), so that a slow minute of the machine
    falls on all rows alike; per row the median over rounds of p50, p90 and memory, and the p50s' range."""
    probes: dict[str, list[dict[str, Any]]] = {key: [] for key in rows}
    for round_index in range(rounds):
        print(f"timing round {round_index + 1}/{rounds}", flush=True)
        for key, row in rows.items():
            probes[key].append(time_once(row, shape, runs, python))
    timing = {}
    for key, results in probes.items():
        p50s = [result["p50_ms"] for result in results]
        timing[key] = {"p50_ms": statistics.median(p50s), "p50_range_ms": [min(p50s), max(p50s)],
                       "p90_ms": statistics.median(result["p90_ms"] for result in results),
                       "model_bytes": statistics.median(result["model_bytes"] for result in results),
                       **({"precision": results[0]["precision"]} if "precision" in results[0] else {})}
    return timing


# --- the table and the plot ------------------------------------------------------------------------------------------

def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that were measured, in the table's order, each with its label, runtime and whether it is ours."""
    rows = []
    for key, who, runtime, _ in ROWS:
        if key in results["rows"]:
            row = results["rows"][key]
            label = f"{who} ({key})" if who in ("fp32 baseline", "ExecuTorch PTQ", "LiteRT PTQ", "onnxruntime static QDQ") else who
            rows.append(row | {"key": key, "label": label, "who": who, "runtime": runtime, "ours": who in OURS})
    return rows


def axis_leaders(rows: list[dict[str, Any]], max_drop: float, baseline_top1: float) -> list[str]:
    """For each axis, the best int8 row within the accuracy limit, and whether it is one of ours: what the docs must
    say when a peer wins."""
    eligible = [row for row in rows if row["key"] not in ("pte", "onnx", "tflite") and baseline_top1 - row["top1"] <= max_drop]
    axes = (("top-1", "top1", max), ("size", "bytes", min), ("p50 latency", "p50_ms", min), ("memory", "model_bytes", min))
    lines = []
    for name, field, pick in axes:
        if not eligible:
            break
        leader = pick(eligible, key=lambda row: row[field])
        ours = [row for row in eligible if row["ours"]]
        best_ours = pick(ours, key=lambda row: row[field]) if ours else None
        verdict = "ours" if leader["ours"] else (f"a peer; our best is {best_ours['label']} at {format_field(field, best_ours)}" if best_ours else "a peer")
        lines.append(f"- {name}: **{leader['label']}** ({format_field(field, leader)}), {verdict}.")
    return lines


def format_field(field: str, row: dict[str, Any]) -> str:
    return {"top1": f"{row['top1']:.2f}%", "bytes": f"{row['bytes'] / 1e6:.3f} MB", "p50_ms": f"{row['p50_ms']:.3f} ms",
            "model_bytes": f"{row['model_bytes'] / 1e6:.2f} MB"}[field]


def render(results: dict[str, Any]) -> str:
    """The docs section: one table of every row, the plot, and which tool leads each axis."""
    rows = table_rows(results)
    context = results["context"]
    lines = [
        f"{provenance_line(results)} "
        f"Baseline `{Path(context['baseline']).name}`: {context['baseline_top1']:.2f}% test top-1 (eager PyTorch); data "
        f"{json.dumps(context['data'])}. Top-1 and agreement (top-1 agreement with the eager fp32 baseline) on all "
        f"{context['test_images']:,} test images in each artifact's runtime; latency at batch 1, 1 thread, median of "
        f"{results['rounds']} alternating fresh-process rounds of {results['runs']} runs (range of the rounds' p50 in brackets); "
        f"memory is the model's peak resident memory in its runtime (as `udacisense` measures every artifact); time is what "
        f"making the artifact took from the fp32 baseline. mobile.yaml took {context['mobile_seconds'] / 60:.1f} min; the search's "
        f"budget was {context['budget_seconds'] / 60:.1f} min ({context['budget_factor']:g}x mobile.yaml's time as first measured), "
        f"under its targets (drop <= {context['max_drop']:g} pt, "
        f"size <= {context['max_megabytes']:.3f} MB); it ran {context['search']['trials']} trials in "
        f"{context['search']['seconds'] / 60:.1f} min ({len(context['search']['failed'])} failed): "
        + (f"its most accurate point on the validation split: {results['rows']['search']['summary']}." if "search" in results["rows"]
           else "**none met the targets**, so it has no row."),
        "",
        "| tool | artifact | runtime | top-1 | agreement | size MB | p50 ms | p90 ms | memory MB | time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        label = f"**{row['label']}**" if row["ours"] else row["label"]
        low, high = row["p50_range_ms"]
        lines.append(f"| {label} | `{Path(row['path']).name}` | {row['runtime']} | {row['top1']:.2f}% | {row['agreement']:.2f}% | "
                     f"{row['bytes'] / 1e6:.3f} | {row['p50_ms']:.3f} [{low:.3f}–{high:.3f}] | {row['p90_ms']:.3f} | "
                     f"{row['model_bytes'] / 1e6:.2f} | {format_seconds(row['seconds'])} |")
    lines += ["", "![top-1 against latency; marker area: file size](img/peers_pareto.png)", "",
              f"Who leads each axis among the int8 files within {context['max_drop']:g} pt of the baseline:",
              *axis_leaders(rows, context["max_drop"], context["baseline_top1"])]
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def pareto_png(results: dict[str, Any]) -> bytes:
    """Top-1 against p50 latency (log), one marker per row, its area proportional to the file's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from udacisense.report.plots import _label_clusters, _png

    rows = table_rows(results)
    largest = max(row["bytes"] for row in rows)
    figure, axis = plt.subplots(figsize=(9, 5.2))
    for row in rows:
        color = "#dc2626" if row["ours"] else "#6b7280" if row["key"] in ("pte", "onnx", "tflite") else "#2563eb"
        axis.scatter(row["p50_ms"], row["top1"], s=30 + 700 * row["bytes"] / largest, color=color, alpha=0.55, edgecolors="#111827", zorder=3)
    points = [{"label": f"{row['label']} ({row['bytes'] / 1e6:.2f} MB)", "latency_ms": row["p50_ms"], "top1": row["top1"]} for row in rows]
    for (x, y), labels, across in _label_clusters(points, "latency_ms", x_share=0.12, y_share=0.06):  # near points share one label
        left = across > 0.85
        axis.annotate("\n".join(labels), (x, y), textcoords="offset points", xytext=(-9 if left else 9, -4), fontsize=7,
                      va="top", ha="right" if left else "left")
    axis.margins(x=0.12, y=0.12)
    axis.set_xscale("log")
    axis.set_xlabel("p50 latency, batch 1, 1 thread (ms, log)")
    axis.set_ylabel("test top-1 (%)")
    axis.grid(alpha=0.3, which="both")
    axis.set_title("Peers side by side: red ours, blue peers' int8, grey fp32; marker area = file size", fontsize=10)
    return _png(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.render:
        python = peer_python(args.runs_dir)
        rows, context = build_rows(args, python)
        from udacisense.io import sha256_of

        timing_file = args.runs_dir / "peers" / "timing.json"
        files = {key: sha256_of(row["path"]) for key, row in rows.items()}  # timings belong to these files, no others
        stored = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
        if args.retime or stored.get("files") != files or stored.get("rounds") != [args.rounds, args.runs]:
            stored = {"files": files, "rounds": [args.rounds, args.runs], "timing": time_rows(rows, context["shape"], args.rounds, args.runs, python)}
            timing_file.write_text(json.dumps(stored, indent=1))
        timing = stored["timing"]
        save_results("peers", provenance() | {"command": " ".join(["python benchmarks/peers.py", *(argv if argv is not None else sys.argv[1:])]),
                               "rounds": args.rounds, "runs": args.runs, "context": context,
                               "rows": {key: row | timing[key] for key, row in rows.items()}})
    results = load_results("peers")
    if not results:
        raise SystemExit("no results yet: run `python benchmarks/peers.py --baseline BEST.pt` first")
    from udacisense.io import atomic_write

    atomic_write(ROOT / "docs" / "img" / "peers_pareto.png", lambda handle: handle.write(pareto_png(results)))
    text = render(results)
    replace_doc_section("peers", text)
    print(text)


if __name__ == "__main__":
    main()
