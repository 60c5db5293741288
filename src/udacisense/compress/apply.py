"""Apply a compression technique to a checkpoint: load, compress, fine-tune, measure before and after, save.

This is what ``udacisense prune`` runs; every number in its ``summary.json`` is measured here,
on the same test images and the same machine, for the model before and after.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.compress.channels import ChannelPruneConfig, prune_channels, prune_channels_and_fine_tune
from udacisense.compress.distill import load_teacher, make_distillation_loss
from udacisense.compress.prune import UnstructuredPruneConfig, prune_and_fine_tune, prune_unstructured
from udacisense.config import DistillConfig, TrainConfig
from udacisense.data import ImageDataset, dataset_for_contract
from udacisense.evaluate import evaluate
from udacisense.io import write_json
from udacisense.profile import profile_model
from udacisense.train import recalibrate_batchnorm, resolve_device

PruneConfig = ChannelPruneConfig | UnstructuredPruneConfig


def measure(model: nn.Module, dataset: ImageDataset, input_shape: tuple[int, ...], latency_runs: int = 200) -> dict[str, Any]:
    """Profile (no memory probe) plus test-set accuracy: the before/after numbers of every technique."""
    test = evaluate(model, dataset.loader("test", 512), dataset.classes, progress=True)
    profile = profile_model(model, input_shape, runs=latency_runs, memory=False)
    return {
        "test_top1": test["top1"],
        "per_class_accuracy": test["per_class_accuracy"],
        "parameters": profile["parameters"]["total"],
        "nonzero_parameters": profile["parameters"]["nonzero"],
        "bytes": profile["size"]["bytes"],
        "gzip_bytes": profile["size"]["gzip_bytes"],
        "macs": profile["macs"],
        "latency_ms": {label: timing["p50_ms"] for label, timing in profile["latency"].items()},
        "layers": profile["layers"],
    }


def prune_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    config: PruneConfig,
    train_config: TrainConfig | None = None,
    distill: DistillConfig | None = None,
    *,
    data_name: str | None = None,
    data_root: Path | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    augment: bool = True,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Prune ``checkpoint`` into ``run_dir/model.pt`` and write ``run_dir/summary.json``.

    ``train_config`` (epochs > 0) fine-tunes after (or, for gradual/iterative schedules, while)
    pruning; ``distill`` adds a teacher, by default the unpruned model itself. Without
    fine-tuning, channel pruning re-estimates BatchNorm statistics, which the cut shifts.
    """
    logger = logger or logging.getLogger("udacisense")
    model, payload = load_model(checkpoint)
    contract, model_spec = payload["input"], payload["model"]
    input_shape = tuple(contract["shape"])
    dataset = dataset_for_contract(contract, data_name, data_root, test_subset, train_subset)
    logger.info(f"measuring {checkpoint} before pruning")
    before = measure(model, dataset, input_shape)

    fit_options: dict[str, Any] = {"logger": logger, "augment": augment}
    if train_config is not None and distill is not None:
        teacher = load_teacher(distill.teacher, dataset.input_shape) if distill.teacher else copy.deepcopy(model)
        fit_options["loss_function"] = make_distillation_loss(
            teacher, distill, train_config.label_smoothing, resolve_device(train_config.device)
        )
    channels = isinstance(config, ChannelPruneConfig)
    if train_config is None:
        if channels:
            prune_channels(model, torch.zeros(input_shape), config, dataset.loader("train", 64, shuffle=True))
            recalibrate_batchnorm(model, dataset.loader("train", 128, shuffle=True))
        else:
            prune_unstructured(model, config.sparsity, config.scope, config.exclude)
    elif channels:
        prune_channels_and_fine_tune(model, config, dataset, train_config, run_dir / "finetune", model_spec, **fit_options)
    else:
        prune_and_fine_tune(model, config, dataset, train_config, run_dir / "finetune", model_spec, **fit_options)
    model.eval()

    logger.info("measuring the pruned model")
    after = measure(model, dataset, input_shape)
    save_checkpoint(run_dir / "model.pt", model, model_spec, contract, compression={"prune": config.model_dump(mode="json")})
    summary = {
        "source": str(checkpoint),
        "checkpoint": str(run_dir / "model.pt"),
        "method": "channels" if channels else "unstructured",
        "config": config.model_dump(mode="json"),
        "fine_tune": train_config.model_dump(mode="json") if train_config else None,
        "distill": distill.model_dump(mode="json") if distill and train_config else None,
        "test_images": len(dataset.test),
        "before": before,
        "after": after,
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def format_comparison(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Before/after table of the measured quantities with the ratio between them."""
    rows = [
        ("test top-1 (%)", before["test_top1"], after["test_top1"], "{:.2f}"),
        ("parameters", before["parameters"], after["parameters"], "{:,}"),
        ("non-zero parameters", before["nonzero_parameters"], after["nonzero_parameters"], "{:,}"),
        ("file size (MB)", before["bytes"] / 1e6, after["bytes"] / 1e6, "{:.3f}"),
        ("gzip size (MB)", before["gzip_bytes"] / 1e6, after["gzip_bytes"] / 1e6, "{:.3f}"),
        ("MACs (M)", before["macs"] / 1e6, after["macs"] / 1e6, "{:.2f}"),
    ]
    rows += [
        (f"latency {label.replace('_', ' ')} (ms)", before["latency_ms"][label], after["latency_ms"][label], "{:.3f}")
        for label in before["latency_ms"]
    ]
    lines = [f"{'':<26} {'before':>12} {'after':>12} {'after/before':>13}"]
    for label, old, new, fmt in rows:
        change = f"{new - old:+.2f} pt" if label.startswith("test") else f"{new / old:.3f}" if old else "-"
        lines.append(f"{label:<26} {fmt.format(old):>12} {fmt.format(new):>12} {change:>13}")
    return "\n".join(lines)
