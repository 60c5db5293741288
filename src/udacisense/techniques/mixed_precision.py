"""Mixed precision by sensitivity: find the layers that int8 hurts most and keep only those in fp32.

Each Conv2d/Linear layer is quantized alone (everything else fp32) and scored by the SQNR of the
model's logits against fp32 and by validation top-1. Then, starting from a fully int8 model, the
least tolerant layers go back to fp32 one at a time until the accuracy drop fits the budget.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from udacisense.errors import UdaciSenseError
from udacisense.techniques.quantize import quantize_pt2e_static

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def sqnr(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; 20 dB = error 10% of the signal)."""
    reference, approximation = reference.detach(), approximation.detach()
    noise = (reference - approximation).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.pow(2).sum() / noise))


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d and Linear layers (the ones the XNNPACK quantizer turns into int8 kernels)."""
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def _score(graph: nn.Module, batches: Batches, reference: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        logits = torch.cat([graph(images) for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    return {"sqnr_db": sqnr(reference, logits), "top1": 100.0 * (logits.argmax(1) == labels).float().mean().item()}


def _reference(model: nn.Module, batches: Batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.eval()(images) for images, _ in batches])


def layer_quantization_sensitivity(
    model: nn.Module, calibration: Sequence[torch.Tensor], batches: Batches, observer: str = "histogram"
) -> dict[str, Any]:
    """SQNR and top-1 with each layer alone in int8; ``calibration`` and ``batches`` share one batch shape."""
    _check_shapes(calibration, batches)
    layers = quantizable_layers(model)
    reference = _reference(model, batches)
    labels = torch.cat([labels for _, labels in batches])
    fp32_top1 = 100.0 * (reference.argmax(1) == labels).float().mean().item()
    example = calibration[0]
    rows = {}
    for name in tqdm(layers, desc="int8 sensitivity", leave=False, disable=None):
        others = tuple(layer for layer in layers if layer != name)
        graph = quantize_pt2e_static(model, example, calibration, observer=observer, protect=others)
        rows[name] = _score(graph, batches, reference) | {"params": sum(p.numel() for p in dict(model.named_modules())[name].parameters())}
    full = quantize_pt2e_static(model, example, calibration, observer=observer)
    return {"fp32_top1": fp32_top1, "int8": _score(full, batches, reference), "layers": rows, "images": len(labels)}


def choose_float_layers(
    model: nn.Module,
    sensitivity: dict[str, Any],
    calibration: Sequence[torch.Tensor],
    batches: Batches,
    max_drop: float = 0.5,
    max_float_layers: int = 8,
    observer: str = "histogram",
) -> dict[str, Any]:
    """Put the lowest-SQNR layers back in fp32, one at a time, until top-1 is within ``max_drop`` points of fp32.

    Returns the chosen layers with the reason for each (its SQNR alone, its parameter cost) and
    the measured top-1 after every step, so the report can show what each float layer bought.
    """
    reference = _reference(model, batches)
    fp32_top1 = sensitivity["fp32_top1"]
    ranked = sorted(sensitivity["layers"], key=lambda name: sensitivity["layers"][name]["sqnr_db"])
    float_layers: list[str] = []
    steps = [{"float_layers": [], **sensitivity["int8"]}]
    while fp32_top1 - steps[-1]["top1"] > max_drop and len(float_layers) < min(max_float_layers, len(ranked)):
        float_layers.append(ranked[len(float_layers)])
        graph = quantize_pt2e_static(model, calibration[0], calibration, observer=observer, protect=tuple(float_layers))
        steps.append({"float_layers": list(float_layers), **_score(graph, batches, reference)})
    total_params = sum(p.numel() for p in model.parameters())
    return {
        "max_drop": max_drop,
        "fp32_top1": fp32_top1,
        "top1": steps[-1]["top1"],
        "met": fp32_top1 - steps[-1]["top1"] <= max_drop,
        "float_layers": float_layers,
        "reasons": {
            name: {
                "sqnr_db_alone": sensitivity["layers"][name]["sqnr_db"],
                "params": sensitivity["layers"][name]["params"],
                "share_of_params": sensitivity["layers"][name]["params"] / total_params,
            }
            for name in float_layers
        },
        "steps": steps,
    }


def _check_shapes(calibration: Sequence[torch.Tensor], batches: Batches) -> None:
    if not calibration or not batches:
        raise UdaciSenseError("mixed precision needs calibration batches and labelled validation batches")
    shapes = {tuple(batch.shape) for batch in calibration} | {tuple(images.shape) for images, _ in batches}
    if len(shapes) != 1:
        raise UdaciSenseError(f"calibration and validation batches must share one shape (exported graphs are static): {sorted(shapes)}")
