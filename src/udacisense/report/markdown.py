"""``report.md``: the run's story for a reader who decides, every number taken from ``result.json``.

Sections: executive summary with the targets table, baseline analysis, each stage's effect,
deployment (artifacts measured in their runtimes), plots, and a business section computed only
from measured numbers with its assumptions stated. :mod:`udacisense.report.html` turns the same
text into a self-contained ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from udacisense.io import atomic_write
from udacisense.report import plots
from udacisense.report.console import target_cells

FIGURES = "report_files"


def write_report(result: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, its figures and ``report.html`` into ``run_dir``; returns their paths."""
    from udacisense.report.html import write_html

    figures = _figures(result, run_dir)
    markdown_path = run_dir / "report.md"
    text = render_markdown(result, figures)
    atomic_write(markdown_path, lambda handle: handle.write(text.encode()))
    html_path = write_html(text, run_dir, run_dir / "report.html", title=f"UdaciSense report: {result['name']}")
    return {"markdown": markdown_path, "html": html_path}


def write_failure_report(run_dir: Path, name: str, step: str, reason: str, finished: list[str],
                         label: str = "TRAINING FAILED") -> dict[str, Path]:
    """``report.md`` and ``report.html`` of a run stopped by a failed step: a banner (``label``), the reason, and what
    finished before it (its checkpoints stay on disk; fix the cause, then ``--resume`` reuses them)."""
    from udacisense.report.html import write_html

    lines = [f"# UdaciSense report: {name}", "", f"> **{label}** in {step}: {reason}", "",
             "No model was shipped from this run: a model at chance, one that diverged, or an artifact that does not compute what "
             "its model does, is no starting point for what follows.",
             "", "Finished before the failure: " + (", ".join(finished) if finished else "nothing") + ".", ""]
    text = "\n".join(lines)
    markdown_path = run_dir / "report.md"
    atomic_write(markdown_path, lambda handle: handle.write(text.encode()))
    html_path = write_html(text, run_dir, run_dir / "report.html", title=f"UdaciSense report: {name} ({label.lower()})")
    return {"markdown": markdown_path, "html": html_path}


def shipped(result: dict[str, Any]) -> dict[str, Any]:
    """What the run hands over: its primary artifact measured in its runtime or, for a run that exported nothing
    (a compression command), the last stage's model (its artifact, or its checkpoint in eager PyTorch)."""
    if result["deploy"]:
        entry = result["deploy"]["artifacts"][result["primary"]]
        check = entry["validation"]
        return {"kind": result["primary"], "file": entry["file"], "runtime": entry["runtime"], "bytes": entry["bytes"],
                "latency_ms": entry["latency"]["1_thread"]["p50_ms"], "top1": check["top1"], "agreement": check["agreement"],
                "memory": entry["memory"], "confusion_matrix": check["confusion_matrix"], "images": check["images"]}
    last = result["stages"][-1] if result["stages"] else result["baseline"]
    metrics = last["metrics"]
    runtime = metrics.get("runtime", "eager")
    return {"kind": runtime, "file": metrics.get("file") or Path(last["checkpoint"]).name, "runtime": runtime,
            "bytes": metrics["bytes"], "latency_ms": metrics["latency_ms"]["1_thread"], "top1": metrics["test_top1"],
            "agreement": metrics.get("agreement"), "memory": metrics.get("memory", {}), "confusion_matrix": metrics.get("confusion_matrix"),
            "images": result["baseline"]["test_images"]}


def run_points(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Accuracy/size/latency points of a run: the eager baseline, the baseline in each runtime, every shipped artifact."""
    baseline = result["baseline"]
    metrics = baseline["metrics"]
    points = [{"label": "baseline eager fp32", "group": "baseline", "megabytes": metrics["bytes"] / 1e6,
               "latency_ms": metrics["eager_latency"]["1_thread"]["p50_ms"], "top1": metrics["test_top1"]}]
    for kind, reference in baseline["references"].items():
        points.append({"label": f"baseline {kind}", "group": "reference", "megabytes": reference["bytes"] / 1e6,
                       "latency_ms": reference["latency_ms"]["1_thread"], "top1": reference["top1"]})
    if not result["deploy"]:
        final = shipped(result)
        return points + [{"label": f"{result['name']} {final['kind']}", "group": "artifact", "megabytes": final["bytes"] / 1e6,
                          "latency_ms": final["latency_ms"], "top1": final["top1"]}]
    for kind, entry in result["deploy"]["artifacts"].items():
        if "validation" in entry:
            points.append({"label": f"{result['name']} {kind}", "group": "artifact", "megabytes": entry["bytes"] / 1e6,
                           "latency_ms": entry["latency"]["1_thread"]["p50_ms"], "top1": entry["validation"]["top1"]})
    return points


def _stage_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"label": "baseline", "metrics": result["baseline"]["metrics"], "runtime": "eager"}]
    rows += [{"label": stage["id"], "metrics": stage["metrics"], "runtime": stage["metrics"]["runtime"]} for stage in result["stages"]]
    for row in rows:
        metrics = row["metrics"]
        row |= {"megabytes": metrics["bytes"] / 1e6, "mmacs": metrics["macs"] / 1e6, "latency_ms": metrics["latency_ms"]["1_thread"],
                "top1": metrics["test_top1"]}
        if row["runtime"] != "eager":
            row["label"] = f"{row['label']} [{row['runtime']}]"
    return rows


def _figures(result: dict[str, Any], run_dir: Path) -> dict[str, str]:
    folder = run_dir / FIGURES
    folder.mkdir(exist_ok=True)
    final = shipped(result)
    classes = result["baseline"]["input"]["classes"]
    layers = json.loads(Path(result["baseline"]["layers_file"]).read_text())["layers"]
    images = {
        "pareto": plots.pareto_plot(run_points(result), f"{result['name']}: accuracy against size and latency"),
        "stages": plots.stage_plot(_stage_rows(result)),
        "confusion": plots.confusion_plot(final["confusion_matrix"], classes, f"{final['kind']} in its runtime, {final['images']} test images"),
        "layers": plots.layer_cost_plot(layers),
    }
    paths = {}
    for name, png in images.items():
        atomic_write(folder / f"{name}.png", lambda handle, png=png: handle.write(png))
        paths[name] = f"{FIGURES}/{name}.png"
    return paths


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f} MB"


def signed_points(value: float) -> str:
    return f"{value:+.2f}" if abs(value) >= 0.005 else "0.00"


def _validation_banner(result: dict[str, Any]) -> list[str]:
    """The first thing a reader sees when a shipped artifact failed its check in its runtime."""
    failures = result.get("validation", {}).get("failures")
    if not failures:
        return []
    return [f"> **VALIDATION FAILED**: {'; '.join(failures)}. This artifact does not compute what its model does within the recipe's "
            "tolerance (export: min_agreement); its numbers below are measured, but no target counts as met on it.", ""]


def _target_rows(targets: list[dict[str, Any]]) -> list[str]:
    if not targets:
        return ["No targets were checked: this run exported nothing (targets are checked on the first export format)."]
    lines = ["| target | goal | measured | result | how it is measured |", "|---|---:|---:|:---:|---|"]
    for row in targets:
        goal, measured = target_cells(row)
        verdict = "**FAIL** (artifact failed validation)" if row.get("validation_failed") else "pass" if row["passed"] else "**FAIL**"
        lines.append(f"| {row['target']} | {goal} | {measured} | {verdict} | {row['definition']} |")
    return lines


def render_markdown(result: dict[str, Any], figures: dict[str, str]) -> str:
    """The report text; ``figures`` maps figure names to relative PNG paths."""
    recipe, baseline = result["recipe"], result["baseline"]
    metrics, final = baseline["metrics"], shipped(result)
    eager_ms = metrics["eager_latency"]["1_thread"]["p50_ms"]
    primary_ms = final["latency_ms"]
    agreement = f", and it agrees with its source model on {final['agreement']:.2f}% of the images" if final["agreement"] is not None else ""
    met = sum(row["passed"] for row in result["targets"])
    machine = result.get("machine", {})
    lines = [
        f"# UdaciSense report: {result['name']}",
        "",
        f"{recipe.get('description', '').strip()}",
        "",
        f"Measured on {machine.get('cpu', 'this machine')} ({machine.get('cores', '?')} cores), torch {machine.get('torch', '?')}; "
        f"{baseline['test_images']:,} test images of {baseline['input']['dataset']}; latency at batch 1, median of "
        f"{recipe['export']['latency_runs']} runs in a fresh process per artifact.",
        "",
        "## Executive summary",
        "",
        *_validation_banner(result),
        f"The {'shipped artifact' if result['deploy'] else 'final model'} `{final['file']}` ({final['kind']}, {final['runtime']}) is "
        f"**{_mb(final['bytes'])}**, {metrics['bytes'] / final['bytes']:.1f}× smaller than the fp32 baseline ({_mb(metrics['bytes'])}); "
        f"it classifies an image in **{primary_ms:.3f} ms** on one thread, {eager_ms / primary_ms:.1f}× faster than the baseline in eager "
        f"PyTorch ({eager_ms:.3f} ms); its top-1 is **{final['top1']:.2f}%** against the baseline's {metrics['test_top1']:.2f}% "
        f"({signed_points(final['top1'] - metrics['test_top1'])} pt){agreement}. "
        f"**{met} of {len(result['targets'])} targets met.**",
        "",
        *_target_rows(result["targets"]),
        "",
        "## Baseline",
        "",
        f"`{baseline['model']['name']}` {json.dumps(baseline['model']['kwargs'])} on input {baseline['input']['shape']}: "
        f"{metrics['parameters']:,} parameters, {_mb(metrics['bytes'])} state dict, {metrics['macs'] / 1e6:.2f} M MACs per image, "
        f"{eager_ms:.3f} ms eager (1 thread), test top-1 {metrics['test_top1']:.2f}%. Checkpoint: `{baseline['checkpoint']}`.",
        "",
        f"![where the compute and parameters are]({figures['layers']})",
        "",
        *_top_layers(json.loads(Path(baseline["layers_file"]).read_text())["layers"]),
        "",
        "## Stages",
        "",
        "Each stage's model measured on the whole test split: fp32 stages in eager PyTorch, int8 stages as the artifact they built, "
        "in its runtime; every latency is taken in a fresh process.",
        "",
        "| stage | what it is | top-1 % | Δ pt | parameters | size | M MACs | latency 1T (runtime) | time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| baseline | {baseline['model']['name']} | {metrics['test_top1']:.2f} | | {metrics['parameters']:,} | {_mb(metrics['bytes'])} | "
        f"{metrics['macs'] / 1e6:.2f} | {metrics['latency_ms']['1_thread']:.3f} ms (eager) | {baseline['seconds']:.0f} s |",
    ]
    previous = metrics["test_top1"]
    for stage in result["stages"]:
        stage_metrics = stage["metrics"]
        lines.append(
            f"| {stage['id']} | {stage['stage']}: {stage.get('summary', '')} | {stage_metrics['test_top1']:.2f} | "
            f"{signed_points(stage_metrics['test_top1'] - previous)} | {stage_metrics['parameters']:,} | {_mb(stage_metrics['bytes'])} | "
            f"{stage_metrics['macs'] / 1e6:.2f} | {stage_metrics['latency_ms']['1_thread']:.3f} ms ({stage_metrics['runtime']}) | {stage['seconds']:.0f} s |"
        )
        previous = stage_metrics["test_top1"]
    lines += ["", f"![per-stage effect]({figures['stages']})", "", *_per_class_table(result), ""]
    lines += (_deployment(result) if result["deploy"] else []) + _variants(result) + ["", f"![accuracy against size and latency]({figures['pareto']})", "",
                                    f"![confusion matrix]({figures['confusion']})", ""]
    lines += _business(result) + ["", "## Reproduce", "", "```", f"udacisense run {result['run']}/recipe.yaml --name {result['name']}-again", "```",
                                  "", f"`recipe.yaml` is the resolved recipe (source: `{result.get('source')}`, overrides applied, every "
                                  "default spelled out); per-stage records are in `stages.jsonl`.", ""]
    return "\n".join(lines)


def _top_layers(layers: list[dict[str, Any]], count: int = 8) -> list[str]:
    total_macs = max(sum(layer["macs"] for layer in layers), 1)
    total_params = max(sum(layer["params"] for layer in layers), 1)
    lines = [f"The {count} most expensive layers:", "", "| layer | type | M MACs | share | parameters | share |", "|---|---|---:|---:|---:|---:|"]
    for layer in sorted(layers, key=lambda row: row["macs"], reverse=True)[:count]:
        lines.append(f"| `{layer['name']}` | {layer['type']} | {layer['macs'] / 1e6:.3f} | {100 * layer['macs'] / total_macs:.1f}% | "
                     f"{layer['params']:,} | {100 * layer['params'] / total_params:.1f}% |")
    heaviest = max(layers, key=lambda row: row["params"])
    lines += ["", f"The largest layer by parameters is `{heaviest['name']}` ({heaviest['type']}, {heaviest['params']:,} parameters, "
                  f"{100 * heaviest['params'] / total_params:.1f}% of the model)."]
    return lines


def _per_class_table(result: dict[str, Any]) -> list[str]:
    classes = result["baseline"]["input"]["classes"]
    base = result["baseline"]["metrics"]["per_class_accuracy"]
    stages = result["stages"]
    lines = ["Per-class top-1 change against the baseline (pt):", "",
             "| class | baseline % | " + " | ".join(stage["id"] for stage in stages) + " |",
             "|---|---:|" + "---:|" * len(stages)]
    for name in classes:
        changes = [signed_points(stage["metrics"]["per_class_accuracy"][name] - base[name]) for stage in stages]
        lines.append(f"| {name} | {base[name]:.1f} | " + " | ".join(changes) + " |")
    return lines


def _deployment(result: dict[str, Any]) -> list[str]:
    manifest, baseline = result["deploy"], result["baseline"]
    eager = baseline["metrics"]["eager_latency"]
    lines = ["## Deployment", "",
             f"Every artifact was run in its own runtime on all {manifest['test_images']:,} test images and compared with its source "
             "model (the last fp32 stage); the baseline rows are the fp32 baseline exported the same way.", "",
             "| artifact | runtime | size | top-1 % | agreement % | latency 1T | latency all cores | memory | check |",
             "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
             f"| baseline (eager fp32) | pytorch | {_mb(baseline['metrics']['bytes'])} | {baseline['metrics']['test_top1']:.2f} | 100.00 | "
             f"{eager['1_thread']['p50_ms']:.3f} ms | {list(eager.values())[-1]['p50_ms']:.3f} ms | {_mb(baseline['metrics']['memory'].get('model_bytes', 0))} | |"]
    for kind, reference in baseline["references"].items():
        latency = reference["latency_ms"]
        lines.append(f"| baseline {reference['file']} | {kind} | {_mb(reference['bytes'])} | {reference['top1']:.2f} | {reference['agreement']:.2f} | "
                     f"{latency['1_thread']:.3f} ms | {list(latency.values())[-1]:.3f} ms | {_mb(reference['memory'].get('model_bytes', 0))} | |")
    for kind, entry in manifest["artifacts"].items():
        if "page" in entry:  # the web page: the browser runs it, around an artifact measured above
            lines.append(f"| **[{entry['page']}](deploy/{entry['page']})** | {entry['runtime']} | {_mb(entry['bytes'])} | "
                         f"the page around `{entry['model']}`, run in the browser (`udacisense serve {result['run']}/deploy` serves it) | | | | | |")
            continue
        if "validation" not in entry:
            lines.append(f"| **{entry['file']}** | {entry['runtime']} | {_mb(entry['bytes'])} | converted, not run here | | | | | |")
            continue
        check, latency = entry["validation"], entry["latency"]
        lines.append(f"| **{entry['file']}** | {entry['runtime']} | {_mb(entry['bytes'])} | {check['top1']:.2f} | {check['agreement']:.2f} | "
                     f"{latency['1_thread']['p50_ms']:.3f} ms | {list(latency.values())[-1]['p50_ms']:.3f} ms | "
                     f"{_mb(entry['memory'].get('model_bytes', 0))} | {'pass' if check['passed'] else '**FAIL** ' + '; '.join(check['failures'])} |")
    not_delegated = {kind: entry["export"].get("not_delegated_ops") for kind, entry in manifest["artifacts"].items()
                     if entry["export"].get("not_delegated_ops")}
    for kind, ops in not_delegated.items():
        lines += ["", f"`{kind}`: operators left outside XNNPACK (run by portable kernels): "
                      + ", ".join(f"`{op}` ×{count}" for op, count in ops.items()) + "."]
    lines += ["", f"The bundle (`{result['run']}/deploy/`) holds the artifacts, `manifest.json` with sha256 hashes and these measurements, "
                  "`golden.json` (inputs and expected outputs for an on-device check) and Android/iOS snippets; "
                  f"`udacisense verify {result['run']}/deploy` re-checks it."]
    return lines


def _variants(result: dict[str, Any]) -> list[str]:
    """The bundle of variants' own report (``export.variants``), its headings one level down."""
    variants = result.get("variants")
    if not variants or not Path(variants["report"]).is_file():
        return []
    report = Path(variants["report"]).read_text().splitlines()
    return ["", *("#" + line if line.startswith("#") else line for line in report),
            f"The bundle of variants is `{variants['folder']}/` (`udacisense verify` checks it too); `udacisense select {variants['folder']} "
            "--latency-ms X` picks one for a budget, and `selector/` holds the same logic for Android (Java, Kotlin) and iOS (Swift)."]


def _business(result: dict[str, Any]) -> list[str]:
    baseline, final = result["baseline"]["metrics"], shipped(result)
    one = final["latency_ms"]
    eager = baseline["eager_latency"]["1_thread"]["p50_ms"]
    errors = lambda top1: (100 - top1) * 100  # misclassified per 10,000 images  # noqa: E731
    machine = result.get("machine", {})
    return [
        "## What it means for the product", "",
        "Computed only from the measurements above; the assumptions are listed below the table.", "",
        f"| | fp32 baseline (eager) | {'shipped artifact' if result['deploy'] else 'final model'} |", "|---|---:|---:|",
        f"| download size | {_mb(baseline['bytes'])} | {_mb(final['bytes'])} |",
        f"| transfer for 1 million installs | {baseline['bytes'] / 1e9 * 1e6 / 1e3:,.1f} TB | {final['bytes'] / 1e9 * 1e6 / 1e3:,.2f} TB |",
        f"| latency per image (1 thread) | {eager:.3f} ms | {one:.3f} ms |",
        f"| images per second per core | {1000 / eager:,.0f} | {1000 / one:,.0f} |",
        f"| memory added by loading and running the model | {_mb(baseline['memory'].get('model_bytes', 0))} | "
        f"{_mb(final['memory'].get('model_bytes', 0))} |",
        f"| misclassified images per 10,000 | {errors(baseline['test_top1']):,.0f} | {errors(final['top1']):,.0f} |",
        "",
        f"Assumptions: one model download per install, uncompressed by the store; batch-1 latency measured on "
        f"{machine.get('cpu', 'this CPU')}, not on a phone (ARM cores, and int8 kernels on them, behave differently; re-time on target "
        "devices with the bundle's golden inputs); memory is the resident-set growth of a fresh process loading the model and running "
        "3 images, which includes the runtime's own buffers; error counts assume the test split's class balance.",
    ]
