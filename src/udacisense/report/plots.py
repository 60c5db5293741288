"""Report figures (matplotlib, no display needed): each function returns PNG bytes."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

COLORS = {"baseline": "#6b7280", "stage": "#2563eb", "artifact": "#dc2626", "reference": "#9ca3af", "run": "#059669",
          "front": "#dc2626", "trial": "#9ca3af", "infeasible": "#f59e0b"}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def pareto_plot(points: Sequence[dict[str, Any]], title: str, accuracy_label: str = "test top-1 (%)") -> bytes:
    """Top-1 against file size and against latency; each point is {label, group, megabytes, latency_ms, top1}.

    The dashed line joins the Pareto-optimal points: nothing else is both smaller (or faster) and more accurate.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "megabytes", "file size (MB, log)"), (axes[1], "latency_ms", "latency, batch 1, 1 thread (ms, log)")):
        for point in points:
            axis.scatter(point[key], point["top1"], s=46, color=COLORS.get(point["group"], "#111827"), zorder=3)
        for (x, y), labels, across in _label_clusters(points, key):
            left = across > 0.65  # labels of points near the right border go to their left, inside the axes
            axis.annotate("\n".join(labels), (x, y), textcoords="offset points", xytext=(-5 if left else 5, 4), fontsize=7,
                          va="bottom", ha="right" if left else "left")
        front = _pareto_front(points, key)
        axis.plot([p[key] for p in front], [p["top1"] for p in front], "--", color="#111827", linewidth=0.8, zorder=2)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())  # log minor labels like "4x10^-1" collide on narrow ranges
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.set_xlabel(label)
        axis.set_ylabel(accuracy_label)
        axis.grid(alpha=0.3, which="both")
    figure.suptitle(title, fontsize=11)
    return _png(figure)


def _label_clusters(points: Sequence[dict[str, Any]], key: str, x_share: float = 0.2,
                    y_share: float = 0.04) -> list[tuple[tuple[float, float], list[str], float]]:
    """Labels of points closer than a label's width and height (as shares of the plotted log-x and y ranges), stacked into one annotation.

    Each cluster is (anchor point, labels, how far across the log-x range the anchor lies, 0 to 1).
    """
    xs = [math.log10(point[key]) for point in points]
    ys = [point["top1"] for point in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    clusters: list[tuple[tuple[float, float], list[str], float]] = []
    for point, x, y in sorted(zip(points, xs, ys), key=lambda item: item[1]):
        for (cx, cy), labels, _ in clusters:
            if abs(math.log10(cx) - x) < x_share * x_span and abs(cy - y) < y_share * y_span:
                labels.append(point["label"])
                break
        else:
            clusters.append(((point[key], y), [point["label"]], (x - min(xs)) / x_span))
    return clusters


def _pareto_front(points: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    front, best = [], float("-inf")
    for point in sorted(points, key=lambda p: (p[key], -p["top1"])):
        if point["top1"] > best:
            front.append(point)
            best = point["top1"]
    return front


def stage_plot(rows: Sequence[dict[str, Any]]) -> bytes:
    """Four panels across the pipeline: file size, MACs, latency (in each row's runtime) and top-1."""
    labels = [row["label"] for row in rows]
    panels = (("megabytes", "size (MB)"), ("mmacs", "MACs (M)"), ("latency_ms", "latency 1 thread (ms)"), ("top1", "test top-1 (%)"))
    figure, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    colors = [COLORS["baseline"]] + [COLORS["stage"]] * (len(rows) - 1)
    for axis, (key, title) in zip(axes, panels):
        values = [row[key] for row in rows]
        bars = axis.bar(range(len(rows)), values, color=colors)
        axis.bar_label(bars, labels=[f"{value:.3g}" for value in values], fontsize=7)
        axis.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        axis.set_title(title, fontsize=10)
        if key == "top1":
            low = min(values)
            axis.set_ylim(max(0.0, low - 5), min(100.0, max(values) + 2))
    return _png(figure)


def confusion_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """Row-normalized confusion matrix with counts."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(6.2, 5.4))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        axis.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=6.5, color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=10)
    return _png(figure)


def layer_cost_plot(layers: Sequence[dict[str, Any]]) -> bytes:
    """Share of MACs and of parameters per block (layers grouped by their first two name parts)."""
    macs, params = defaultdict(int), defaultdict(int)
    for layer in layers:
        block = ".".join(layer["name"].split(".")[:2])
        macs[block] += layer["macs"]
        params[block] += layer["params"]
    blocks = list(dict.fromkeys(".".join(layer["name"].split(".")[:2]) for layer in layers))
    total_macs, total_params = max(sum(macs.values()), 1), max(sum(params.values()), 1)
    figure, axis = plt.subplots(figsize=(11, 3.6))
    positions = range(len(blocks))
    axis.bar([p - 0.2 for p in positions], [100 * macs[b] / total_macs for b in blocks], width=0.4, label="MACs", color=COLORS["stage"])
    axis.bar([p + 0.2 for p in positions], [100 * params[b] / total_params for b in blocks], width=0.4, label="parameters", color=COLORS["artifact"])
    axis.set_xticks(list(positions), blocks, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("share of the model (%)")
    axis.set_title("where the baseline's compute and parameters are", fontsize=10)
    axis.legend()
    return _png(figure)
