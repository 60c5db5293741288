"""A search's ``report.md`` and ``pareto.png`` and its front as a console table, from ``pareto.json``-shaped data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from udacisense.io import atomic_write
from udacisense.report.plots import pareto_plot


def front_table(result: dict[str, Any]) -> str:
    """The front (or, when no trial met the constraints, the least-violating points) as a Markdown table."""
    heading = "Pareto front" if result["feasible_found"] else f"no trial met the constraints ({result['constraints']}); closest points"
    lines = [f"{heading} of search '{result['name']}' after {result['trial_count']} trials, {result['elapsed_seconds'] / 60:.1f} min:", "",
             "| trial | fidelity | configuration | val top-1 | drop (pt) | latency 1 thread | size | test top-1 | recipe |",
             "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for point in result["front"]:
        test = f"{point['test_top1']:.2f}%" if "test_top1" in point else "(at the end)"
        if point.get("validation_failures"):
            test += " **VALIDATION FAILED**: " + "; ".join(point["validation_failures"])
        lines.append(f"| {point['trial']} | {point['fidelity']} | {point['summary']} | {point['top1']:.2f}% | {point['drop']:.2f} | "
                     f"{point['latency_ms']:.3f} ms | {point['megabytes']:.3f} MB | {test} | {point.get('recipe', '')} |")
    return "\n".join(lines)


def write_search_report(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``folder/pareto.png`` (every trial, the front marked) and ``folder/report.md``."""
    paths = {"markdown": folder / "report.md"}
    front = {point["trial"] for point in result["front"]}
    points = [{"label": point["trial"], "megabytes": point["megabytes"], "latency_ms": point["latency_ms"], "top1": point["top1"],
               "group": "front" if point["trial"] in front else "trial" if point["feasible"] else "infeasible"}
              for point in result["trials"]]
    if points:
        png = pareto_plot(points, f"search '{result['name']}': red = front, grey = feasible, amber = violates a constraint "
                                  "(p = proxy, f = full fine-tune)", accuracy_label="validation top-1 (%)")
        paths["plot"] = folder / "pareto.png"
        atomic_write(paths["plot"], lambda handle: handle.write(png))
    best = [f"- {label}: trial {point['trial']} ({point['summary']}), `best_{objective}.yaml`"
            for objective, label in (("accuracy", "most accurate"), ("latency", "fastest"), ("size", "smallest"))
            if (point := result["best"].get(objective))]
    failed = result.get("failed", [])  # absent from a pareto.json written before failures were listed
    failures = [f"{len(failed)} failed trial{'s' if len(failed) > 1 else ''} (never on the front):", "",
                *[f"- {row['trial']} ({row['summary'] or 'not sampled'}): {row['error']}" for row in failed], ""] if failed else []
    text = "\n".join([f"# Search: {result['name']}", "", f"Constraints: {result['constraints']}. Objectives: validation top-1 (max), "
                      "latency of the int8 `.pte` at batch 1 and 1 thread in ExecuTorch (min), its size (min); test top-1 is measured "
                      "only for the front, at the end.", "", front_table(result), "", *best, "", *failures,
                      "![every trial](pareto.png)" if points else "(no finished trial yet)", ""])
    atomic_write(paths["markdown"], lambda handle: handle.write(text.encode()))
    return paths
