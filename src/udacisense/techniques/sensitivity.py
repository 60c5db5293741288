"""Per-layer channel-pruning sensitivity, and a planner that turns it into non-uniform ratios.

Each prunable layer is pruned alone (with everything coupled to it) at increasing ratios and the
copy is scored on a validation subset. Layers whose accuracy barely moves can lose many channels;
fragile ones keep theirs. The planner spends MACs and/or parameter budgets greedily on the cuts
with the smallest accuracy loss per MAC saved, then checks the real pruned model meets the target.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from udacisense.errors import UdaciSenseError
from udacisense.evaluate import evaluate
from udacisense.io import atomic_write, write_json
from udacisense.profile import count_macs
from udacisense.techniques.channels import ChannelPruneConfig, output_layers, prune_channels

Batches = list[tuple[torch.Tensor, torch.Tensor]]
Metric = Literal["macs", "params"]


def candidate_layers(model: nn.Module, example: torch.Tensor, protect: Iterable[str] = ()) -> list[str]:
    """Names of the Conv2d/Linear layers whose output channels can be pruned (the model's outputs excluded).

    Depthwise convolutions are left out: their channels are cut through the layer that feeds them.
    """
    outputs = set(map(id, output_layers(model, example)))
    names = []
    for name, module in model.named_modules():
        if name in protect or id(module) in outputs:
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            names.append(name)
    return names


def _measure(model: nn.Module, example: torch.Tensor, batches: Batches, classes) -> dict[str, float]:
    macs, _ = count_macs(model, tuple(example.shape))
    return {
        "top1": evaluate(model, batches, classes)["top1"],
        "macs": macs,
        "params": sum(p.numel() for p in model.parameters()),
    }


def layer_sensitivity(
    model: nn.Module,
    example: torch.Tensor,
    batches: Batches,
    classes,
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
    importance: str = "l2",
    round_to: int | None = 8,
    protect: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Accuracy, MACs and parameters after pruning each candidate layer alone at each ratio."""
    if not ratios or any(not 0.0 < ratio < 1.0 for ratio in ratios):
        raise UdaciSenseError(f"sensitivity ratios must lie in (0, 1), got {ratios}")
    model = model.eval()
    baseline = _measure(model, example, batches, classes)
    layers: dict[str, list[dict[str, float]]] = {}
    for name in tqdm(candidate_layers(model, example, protect), desc="sensitivity", leave=False, disable=None):
        rows = []
        for ratio in ratios:
            pruned = prune_channels(
                copy.deepcopy(model),
                example,
                ChannelPruneConfig(ratio=0.0, importance=importance, round_to=round_to, protect=protect, layer_ratios={name: ratio}),
            )
            rows.append({"ratio": ratio, **_measure(pruned, example, batches, classes)})
        layers[name] = rows
    return {"baseline": baseline, "ratios": list(ratios), "importance": importance, "layers": layers}


def plan_layer_ratios(
    model: nn.Module,
    example: torch.Tensor,
    sensitivity: dict[str, Any],
    budgets: dict[str, float],
    importance: str = "l2",
    round_to: int | None = 8,
    protect: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Per-layer ratios that keep at most ``budgets[metric]`` (a fraction) of the model's MACs and/or parameters.

    ``budgets`` is e.g. ``{"macs": 0.3}`` or ``{"macs": 0.3, "params": 0.25}``. Greedy: repeatedly
    take the next ratio step of the layer that loses the least validation accuracy per unit saved
    of the metrics still over budget (from the single-layer measurements), until the pruned model,
    actually pruned and counted, fits every budget.
    """
    unknown = set(budgets) - set(Metric.__args__)
    if not budgets or unknown:
        raise UdaciSenseError(f"the planner's budgets are 'macs' and/or 'params'; got {sorted(budgets) or 'none'}")
    for metric, target in budgets.items():
        if not 0.0 < target < 1.0:
            raise UdaciSenseError(f"the planner's {metric} budget is the share to keep, in (0, 1); got {target}")
    base = sensitivity["baseline"]
    start = {"ratio": 0.0, "top1": base["top1"], "macs": base["macs"], "params": base["params"]}
    levels = {name: [start] + rows for name, rows in sensitivity["layers"].items()}
    chosen = {name: 0 for name in levels}

    def cost(name: str, over: list[str]) -> float:
        current, following = levels[name][chosen[name]], levels[name][chosen[name] + 1]
        saved = sum((current[metric] - following[metric]) / base[metric] for metric in over)
        lost = max(current["top1"] - following["top1"], 0.0) + 1e-3  # ties go to the bigger saving
        return lost / saved if saved > 0 else float("inf")

    # Only the pruned model's cost is read here, and how many channels go does not depend on which: a criterion that needs
    # gradients (taylor) would need training batches for nothing, so the plan counts with weight magnitudes.
    counting = "l2" if importance == "taylor" else importance
    while True:
        ratios = {name: levels[name][index]["ratio"] for name, index in chosen.items() if index > 0}
        pruned = prune_channels(
            copy.deepcopy(model), example, ChannelPruneConfig(ratio=0.0, importance=counting, round_to=round_to, protect=protect, layer_ratios=ratios)
        )
        achieved = {metric: _measure_cost(pruned, example, metric) / base[metric] for metric in budgets}
        over = [metric for metric in budgets if achieved[metric] > budgets[metric]]
        open_layers = [name for name in levels if chosen[name] + 1 < len(levels[name]) and cost(name, over) < float("inf")]
        if not over or not open_layers:
            break
        chosen[min(open_layers, key=lambda name: cost(name, over))] += 1
    return {
        "budgets": dict(budgets),
        "achieved": achieved,
        "met": not over,
        "layer_ratios": ratios,
        "predicted_top1_drop": sum(max(base["top1"] - levels[name][index]["top1"], 0.0) for name, index in chosen.items()),
    }


def _measure_cost(model: nn.Module, example: torch.Tensor, metric: Metric) -> float:
    if metric == "macs":
        return count_macs(model, tuple(example.shape))[0]
    return sum(p.numel() for p in model.parameters())


def save_sensitivity(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write ``sensitivity.json`` and a heat map ``sensitivity.png`` (accuracy drop per layer and ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    json_path = write_json(folder / "sensitivity.json", result)
    names = list(result["layers"])
    drops = [[result["baseline"]["top1"] - row["top1"] for row in result["layers"][name]] for name in names]
    figure, axis = plt.subplots(figsize=(max(6, 0.28 * len(names) + 2), 3.6))
    image = axis.imshow(torch.tensor(drops).T.numpy(), aspect="auto", cmap="magma_r", vmin=0)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    axis.set_yticks(range(len(result["ratios"])), [f"{ratio:.0%}" for ratio in result["ratios"]])
    axis.set_ylabel("channels removed")
    axis.set_title(f"validation top-1 drop (pt) when one layer is pruned ({result['importance']} importance)")
    figure.colorbar(image, ax=axis, label="pt")
    figure.tight_layout()
    png_path = folder / "sensitivity.png"
    atomic_write(png_path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    plt.close(figure)
    return {"json": json_path, "png": png_path}
