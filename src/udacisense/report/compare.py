"""``udacisense compare``: finished runs side by side (their shipped artifacts) and one Pareto plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from udacisense.errors import UdaciSenseError
from udacisense.io import atomic_write, write_json
from udacisense.report.markdown import run_points, shipped, signed_points
from udacisense.report.plots import pareto_plot
from udacisense.runs import RESULT


def load_result(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``result.json``."""
    path = Path(run_dir) / RESULT
    if not path.is_file():
        raise UdaciSenseError(f"{run_dir} has no {RESULT}; finish it first with 'udacisense run <recipe> --resume'")
    return json.loads(path.read_text())


def comparison_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: its primary artifact measured in its runtime, relative to the run's own fp32 baseline."""
    rows = []
    for result in results:
        baseline = result["baseline"]["metrics"]
        final = shipped(result)
        latency = final["latency_ms"]
        rows.append({
            "run": result["name"], "artifact": final["file"], "runtime": final["runtime"], "bytes": final["bytes"],
            "latency_ms": latency, "top1": final["top1"], "baseline_top1": baseline["test_top1"],
            "smaller": baseline["bytes"] / final["bytes"], "faster": baseline["eager_latency"]["1_thread"]["p50_ms"] / latency,
            "targets_met": sum(row["passed"] for row in result["targets"]), "targets": len(result["targets"]),
            "missed": [row["target"] for row in result["targets"] if not row["passed"]],
        })
    return rows


def format_comparison_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table (also readable in a terminal)."""
    lines = ["| run | artifact | runtime | size MB | × smaller | p50 1T ms | × faster than eager | top-1 % | Δ pt | targets met |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        missed = f" (missed: {', '.join(row['missed'])})" if row["missed"] else ""
        lines.append(f"| {row['run']} | {row['artifact']} | {row['runtime']} | {row['bytes'] / 1e6:.3f} | {row['smaller']:.1f} | "
                     f"{row['latency_ms']:.3f} | {row['faster']:.1f} | {row['top1']:.2f} | {signed_points(row['top1'] - row['baseline_top1'])} | "
                     f"{row['targets_met']}/{row['targets']}{missed} |")
    return "\n".join(lines)


def compare_runs(run_dirs: list[Path], output: Path) -> tuple[str, dict[str, Path]]:
    """Write ``compare.md``, ``compare.json`` and ``pareto.png`` into ``output``; returns the table and the paths."""
    results = [load_result(run_dir) | {"name": Path(run_dir).name} for run_dir in run_dirs]  # label runs by their folders
    rows = comparison_rows(results)
    table = format_comparison_table(rows)
    points, seen_baselines = [], set()
    for result in results:
        for point in run_points(result):
            if point["group"] in ("baseline", "reference"):  # runs sharing a baseline show it once
                key = (result["baseline"]["checkpoint"], point["label"])
                if key in seen_baselines:
                    continue
                seen_baselines.add(key)
            points.append(point)
    output.mkdir(parents=True, exist_ok=True)
    plot = output / "pareto.png"
    png = pareto_plot(points, "runs compared: accuracy against size and latency (each run's shipped artifacts)")
    atomic_write(plot, lambda handle: handle.write(png))
    markdown = output / "compare.md"
    text = f"# Runs compared\n\n{table}\n\n![Pareto]({plot.name})\n"
    atomic_write(markdown, lambda handle: handle.write(text.encode()))
    write_json(output / "compare.json", {"runs": [str(run_dir) for run_dir in run_dirs], "rows": rows})
    return table, {"markdown": markdown, "plot": plot, "json": output / "compare.json"}
