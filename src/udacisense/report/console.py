"""Console text from a run's results: the targets table and a before/after table for one-stage runs."""

from __future__ import annotations

from typing import Any

from udacisense.formats import FORMATS


def target_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The goal (with its direction) and the measured value of a target row, as display text."""
    percent = "pt" not in row["target"]

    def show(value: float) -> str:
        text = f"{100 * value:.1f}%" if percent else f"{value:.2f}"
        return text.lstrip("-") if float(text.rstrip("%")) == 0 else text  # no "-0.00"

    return ("≥ " if row["at_least"] else "≤ ") + show(row["goal"]), show(row["measured"])


def format_targets(rows: list[dict[str, Any]]) -> str:
    """The targets table for the console."""
    if not rows:
        return "no targets checked: the run exported nothing (add export formats to check them)"
    lines = [f"{'target':<27} {'goal':>10} {'measured':>10}  result"]
    for row in rows:
        goal, measured = target_cells(row)
        lines.append(f"{row['target']:<27} {goal:>10} {measured:>10}  {'PASS' if row['passed'] else 'FAIL'}")
    return "\n".join(lines)


def format_comparison(result: dict[str, Any]) -> str:
    """The baseline against each stage's model (and, for a stage that built an artifact, against the baseline exported
    to the same runtime), every number as measured by the run."""
    baseline = result["baseline"]
    columns = [("baseline", baseline["metrics"] | {"runtime": "eager"})]
    for stage in result["stages"]:
        runtime = stage["metrics"]["runtime"]
        reference_kind = FORMATS[runtime].reference if runtime in FORMATS else None
        reference = baseline["references"].get(reference_kind or "")
        if reference:
            columns.append((f"baseline {reference['file']}", {"test_top1": reference["top1"], "bytes": reference["bytes"],
                                                               "latency_ms": reference["latency_ms"], "runtime": reference_kind}))
        columns.append((stage["id"], stage["metrics"]))
    rows = [("runtime", lambda m: m["runtime"]), ("test top-1 (%)", lambda m: f"{m['test_top1']:.2f}"),
            ("parameters", lambda m: f"{m['parameters']:,}" if "parameters" in m else ""),
            ("size (MB)", lambda m: f"{m['bytes'] / 1e6:.3f}"),
            ("gzip size (MB)", lambda m: f"{m['gzip_bytes'] / 1e6:.3f}" if "gzip_bytes" in m else ""),
            ("MACs (M)", lambda m: f"{m['macs'] / 1e6:.2f}" if "macs" in m else "")]
    rows += [(f"latency {label.replace('_', ' ')} (ms)", lambda m, label=label: f"{m['latency_ms'][label]:.3f}")
             for label in baseline["metrics"]["latency_ms"]]
    width = max(18, *(len(name) + 2 for name, _ in columns))
    lines = [f"{'':<24}" + "".join(f"{name:>{width}}" for name, _ in columns)]
    lines += [f"{label:<24}" + "".join(f"{cell(metrics):>{width}}" for _, metrics in columns) for label, cell in rows]
    return "\n".join(lines)
