"""Apply a compression technique to a checkpoint: load, compress, fine-tune, measure before and after, save.

This is what ``udacisense prune``, ``quantize`` and ``factorize`` run; every number in their
``summary.json`` is measured here, on the same test images and the same machine, for the model
before and after (quantized models through the runtime that ships them).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.compress.channels import ChannelPruneConfig, prune_channels, prune_channels_and_fine_tune
from udacisense.compress.distill import load_teacher, make_distillation_loss
from udacisense.compress.lowrank import LowRankConfig
from udacisense.compress.prune import UnstructuredPruneConfig, prune_and_fine_tune, prune_unstructured
from udacisense.compress.quantize import QuantizeConfig
from udacisense.config import DistillConfig, TrainConfig
from udacisense.data import ImageDataset, dataset_for_contract
from udacisense.deploy.bench import bench_artifact
from udacisense.deploy.runtime import load_runner, run_batches
from udacisense.deploy.validate import Tolerances, validate_artifact
from udacisense.errors import UdaciSenseError
from udacisense.evaluate import evaluate
from udacisense.io import write_json
from udacisense.profile import profile_model, serialized_size
from udacisense.train import fit, recalibrate_batchnorm, resolve_device

PruneConfig = ChannelPruneConfig | UnstructuredPruneConfig


@dataclass(frozen=True)
class DataOptions:
    """Which data to fine-tune and measure on; by default the checkpoint's own data set, whole."""

    name: str | None = None
    root: Path | None = None
    train_subset: int | None = None
    test_subset: int | None = None


def load_for_compression(checkpoint: Path, data: DataOptions) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The checkpoint's model and payload, and its data presented exactly as in training."""
    model, payload = load_model(checkpoint)
    dataset = dataset_for_contract(payload["input"], data.name, data.root, data.test_subset, data.train_subset)
    return model, payload, dataset


def teacher_loss(model: nn.Module, dataset: ImageDataset, train_config: TrainConfig, distill: DistillConfig | None):
    """A distillation loss from ``distill.teacher``, or from a frozen copy of ``model`` (self-distillation); None without ``distill``."""
    if distill is None:
        return None
    teacher = load_teacher(distill.teacher, dataset.input_shape) if distill.teacher else copy.deepcopy(model)
    return make_distillation_loss(teacher, distill, train_config.label_smoothing, resolve_device(train_config.device))


def measure(model: nn.Module, dataset: ImageDataset, input_shape: tuple[int, ...], latency_runs: int | None = 200) -> dict[str, Any]:
    """Profile (no memory probe) plus test-set accuracy: the before/after numbers of every technique.

    ``latency_runs=None`` skips the in-process latency (``latency_ms`` is then empty) for callers that
    time the model in a fresh process.
    """
    test = evaluate(model, dataset.loader("test", 512), dataset.classes, progress=True)
    profile = profile_model(model, input_shape, runs=latency_runs or 0, memory=False, latency=latency_runs is not None)
    return {
        "test_top1": test["top1"],
        "per_class_accuracy": test["per_class_accuracy"],
        "parameters": profile["parameters"]["total"],
        "nonzero_parameters": profile["parameters"]["nonzero"],
        "bytes": profile["size"]["bytes"],
        "gzip_bytes": profile["size"]["gzip_bytes"],
        "macs": profile["macs"],
        "latency_ms": {label: timing["p50_ms"] for label, timing in (profile["latency"] or {}).items()},
        "layers": profile["layers"],
    }


def prune_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    config: PruneConfig,
    train_config: TrainConfig | None = None,
    distill: DistillConfig | None = None,
    *,
    data: DataOptions = DataOptions(),
    augment: bool = True,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Prune ``checkpoint`` into ``run_dir/model.pt`` and write ``run_dir/summary.json``.

    ``train_config`` (epochs > 0) fine-tunes after (or, for gradual/iterative schedules, while)
    pruning; ``distill`` adds a teacher, by default the unpruned model itself. Without
    fine-tuning, channel pruning re-estimates BatchNorm statistics, which the cut shifts.
    """
    logger = logger or logging.getLogger("udacisense")
    model, payload, dataset = load_for_compression(checkpoint, data)
    contract, model_spec = payload["input"], payload["model"]
    input_shape = tuple(contract["shape"])
    logger.info(f"measuring {checkpoint} before pruning")
    before = measure(model, dataset, input_shape)

    fit_options: dict[str, Any] = {"logger": logger, "augment": augment}
    if train_config is not None:
        fit_options["loss_function"] = teacher_loss(model, dataset, train_config, distill)
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
    lines = [f"{'':<26} {'before':>18} {'after':>18} {'after/before':>13}"]
    for label, old, new, fmt in rows:
        change = f"{new - old:+.2f} pt" if label.startswith("test") else f"{new / old:.3f}" if old else "-"
        lines.append(f"{label:<26} {fmt.format(old):>18} {fmt.format(new):>18} {change:>13}")
    return "\n".join(lines)


def measure_artifact(kind: str, path: Path, input_shape: tuple[int, ...], images: torch.Tensor, labels: torch.Tensor,
                     source_logits: torch.Tensor, classes: list[str] | None = None) -> dict[str, Any]:
    """Size, accuracy and agreement in the artifact's own runtime on the whole split, and fresh-process latency."""
    runner = load_runner(kind, path, threads=None)
    # measured, not judged: a quantized model's agreement is a result to report, not a pass/fail gate
    validation = validate_artifact(runner, images, labels, source_logits, quantized=True, tolerances=Tolerances(min_agreement=0.0),
                                   classes=classes)
    bench = bench_artifact(kind, path, input_shape)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "top1": validation["top1"],
        "agreement": validation["agreement"],
        **({"per_class_accuracy": validation["per_class_accuracy"]} if classes is not None else {}),
        "latency_ms": {label: timing["p50_ms"] for label, timing in bench["latency"].items()},
        "memory": bench["memory"],
    }


def quantize_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    config: QuantizeConfig,
    train_config: TrainConfig | None = None,
    distill: DistillConfig | None = None,
    *,
    max_drop: float | None = None,
    data: DataOptions = DataOptions(),
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Quantize ``checkpoint`` (see :func:`quantize_to_artifact`) and measure the result in the runtime that ships it,
    beside the fp32 source exported the same way. Everything lands in ``run_dir/summary.json``.
    """
    from udacisense.export.executorch import export_pte
    from udacisense.export.torchscript import export_ptl

    model, payload, dataset = load_for_compression(checkpoint, data)
    input_shape = tuple(payload["input"]["shape"])
    kind, path, info = quantize_to_artifact(model, payload["model"], dataset, config, run_dir, train_config, distill,
                                            max_drop=max_drop, logger=logger)
    images, labels = dataset.whole("test")
    source_logits = run_batches(load_runner("eager", model=model, threads=None), images).float()
    fp32_kind, fp32_path = ("ptl", run_dir / "model_fp32.ptl") if kind == "ptl" else ("pte", run_dir / "model_fp32.pte")
    (export_ptl if kind == "ptl" else export_pte)(model, torch.zeros(input_shape), fp32_path)
    summary: dict[str, Any] = {
        "source": str(checkpoint), "method": config.method, "config": config.model_dump(mode="json"),
        "test_images": int(labels.numel()),
        "source_top1": 100.0 * (source_logits.argmax(1) == labels).float().mean().item(),
        **info,
        "fp32_artifact": measure_artifact(fp32_kind, fp32_path, input_shape, images, labels, source_logits),
        "artifact": measure_artifact(kind, path, input_shape, images, labels, source_logits),
    }
    if kind == "ptl":
        summary["state_dict_bytes"] = {"fp32": serialized_size(model)["bytes"], "dynamic_int8": info.pop("dynamic_state_dict_bytes")}
    summary["top1_drop"] = summary["source_top1"] - summary["artifact"]["top1"]
    summary["size_vs_fp32_artifact"] = summary["artifact"]["bytes"] / summary["fp32_artifact"]["bytes"]
    write_json(run_dir / "summary.json", summary)
    return summary


def quantize_to_artifact(
    model: nn.Module,
    model_spec: dict[str, Any],
    dataset: ImageDataset,
    config: QuantizeConfig,
    folder: Path,
    train_config: TrainConfig | None = None,
    distill: DistillConfig | None = None,
    *,
    max_drop: float | None = None,
    resume: bool = False,
    logger: logging.Logger | None = None,
) -> tuple[str, Path, dict[str, Any]]:
    """Quantize ``model`` (left unchanged) into the artifact that ships it; returns (format, path, what was done).

    static/qat write ``folder/model_int8.pte`` (XNNPACK int8, format ``pte-int8``); dynamic writes
    ``folder/model_dynamic.ptl`` (TorchScript-lite, as the seed project did). ``max_drop`` (static)
    keeps the most sensitive layers in fp32 until the validation top-1 drop is within budget.
    """
    from udacisense.compress.quantize import quantize_dynamic, quantize_pt2e_static
    from udacisense.export.executorch import export_pte
    from udacisense.export.torchscript import export_ptl

    logger = logger or logging.getLogger("udacisense")
    if max_drop is not None and config.method != "static":
        raise UdaciSenseError("max_drop (mixed precision by sensitivity) applies to method static; "
                              "for QAT name the layers to keep in fp32 in float_layers")
    if config.method == "qat" and train_config is None:
        raise UdaciSenseError("quantization-aware training needs fine-tuning epochs; pass --epochs 2 or more")
    if config.backend != "xnnpack":
        raise UdaciSenseError("udacisense measures int8 models in ExecuTorch, so it needs backend xnnpack; "
                              "use udacisense.compress.quantize.make_quantizer('x86') from Python for server graphs")
    example = torch.zeros(1, *dataset.input_shape)
    info: dict[str, Any] = {}
    if config.method == "dynamic":
        quantized, info["dynamic"] = quantize_dynamic(model)
        info["dynamic_state_dict_bytes"] = serialized_size(quantized)["bytes"]
        path = folder / "model_dynamic.ptl"
        export_ptl(quantized, example, path)
        return "ptl", path, info
    float_layers = config.float_layers
    if max_drop is not None:
        info["mixed_precision"] = _plan_mixed_precision(model, dataset, config, max_drop, logger)
        float_layers = tuple(info["mixed_precision"]["float_layers"])
    if config.method == "static":
        graph = quantize_pt2e_static(model, example, dataset.calibration_batches(config.calibration_images), observer=config.observer,
                                     float_layers=float_layers, per_channel=config.per_channel)
    else:
        graph, info["qat_history"] = _quantization_aware_training(model, model_spec, dataset, config, float_layers, train_config,
                                                                  distill, folder, logger, resume)
    info["float_layers"] = list(float_layers)
    path = folder / "model_int8.pte"
    info["export"] = export_pte(graph, example, path)
    return "pte-int8", path, info


def _plan_mixed_precision(model: nn.Module, dataset: ImageDataset, config: QuantizeConfig, max_drop: float,
                          logger: logging.Logger) -> dict[str, Any]:
    """Layer sensitivities on 1,024 validation images and the fp32 layers that bring the drop within ``max_drop``."""
    from udacisense.compress.mixed_precision import choose_float_layers, layer_quantization_sensitivity

    logger.info("measuring each layer's int8 sensitivity on validation images")
    split = dataset.val if len(dataset.val) else dataset.train
    batch_size = 64  # the sensitivity graphs are exported at this static batch size
    count = min(1024, len(split)) // batch_size * batch_size
    if count == 0:
        raise UdaciSenseError(f"mixed precision needs at least {batch_size} validation images")
    batches = list(zip(dataset.normalization.apply(split.images[:count]).split(batch_size), split.labels[:count].split(batch_size)))
    calibration = dataset.calibration_batches(config.calibration_images, batch_size)
    sensitivity = layer_quantization_sensitivity(model, calibration, batches, config.observer)
    plan = choose_float_layers(model, sensitivity, calibration, batches, max_drop, observer=config.observer)
    logger.info(f"kept in fp32: {', '.join(plan['float_layers']) or 'none'}")
    return plan | {"sensitivity": sensitivity["layers"]}


def _quantization_aware_training(model, model_spec, dataset, config: QuantizeConfig, float_layers, train_config: TrainConfig,
                                 distill: DistillConfig | None, run_dir: Path, logger: logging.Logger, resume: bool = False):
    """Fine-tune with fake quantization (BatchNorm and observers frozen from the configured epochs), then convert."""
    from udacisense.compress.quantize import convert_qat, freeze_qat, prepare_qat

    prepared = prepare_qat(model, torch.zeros(1, *dataset.input_shape), float_layers=float_layers)
    never = train_config.epochs + 1

    def freeze(epoch: int) -> None:
        freeze_qat(prepared, batchnorm=epoch >= (config.freeze_batchnorm_epoch or never),
                   observers=epoch >= (config.freeze_observer_epoch or never))

    history = fit(prepared, dataset, train_config, run_dir / "qat", model_spec, logger=logger, on_epoch_start=freeze,
                  loss_function=teacher_loss(model, dataset, train_config, distill), resume=resume)
    return convert_qat(prepared), [asdict(row) for row in history]


def format_quantization(summary: dict[str, Any]) -> str:
    """Source vs quantized artifact, both measured in their runtime."""
    fp32, artifact = summary["fp32_artifact"], summary["artifact"]
    lines = [f"{'':<22} {'fp32':>18} {summary['method']:>18}",
             f"{'file':<22} {fp32['file']:>18} {artifact['file']:>18}",
             f"{'size (MB)':<22} {fp32['bytes'] / 1e6:>18.3f} {artifact['bytes'] / 1e6:>18.3f}",
             f"{'test top-1 (%)':<22} {fp32['top1']:>18.2f} {artifact['top1']:>18.2f}",
             f"{'agreement (%)':<22} {fp32['agreement']:>18.2f} {artifact['agreement']:>18.2f}"]
    lines += [f"{'latency ' + label.replace('_', ' ') + ' (ms)':<22} {fp32['latency_ms'][label]:>18.3f} {artifact['latency_ms'][label]:>18.3f}"
              for label in fp32["latency_ms"]]
    if summary.get("dynamic"):
        lines.append(f"note: {summary['dynamic']['note']} ({100 * summary['dynamic']['quantized_parameter_share']:.1f}% of the parameters)")
    if summary.get("float_layers"):
        lines.append(f"kept in fp32: {', '.join(summary['float_layers'])}")
    return "\n".join(lines)


def factorize_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    config: LowRankConfig,
    train_config: TrainConfig | None = None,
    distill: DistillConfig | None = None,
    *,
    data: DataOptions = DataOptions(),
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """SVD-factorize ``checkpoint``'s Linear and 1x1 layers, fine-tune (optionally distilled), measure before/after."""
    from udacisense.compress.lowrank import factorize

    logger = logger or logging.getLogger("udacisense")
    model, payload, dataset = load_for_compression(checkpoint, data)
    contract, input_shape = payload["input"], tuple(payload["input"]["shape"])
    before = measure(model, dataset, input_shape)
    loss_function = teacher_loss(model, dataset, train_config, distill) if train_config else None  # before factorizing
    report = factorize(model, config)
    logger.info(f"factorized {len(report['factorized'])} layers, skipped {len(report['skipped'])}")
    if train_config is not None:
        fit(model, dataset, train_config, run_dir / "finetune", payload["model"], logger=logger, loss_function=loss_function)
    after = measure(model.eval(), dataset, input_shape)
    ranks = {name: row["rank"] for name, row in report["factorized"].items()}
    save_checkpoint(run_dir / "model.pt", model, payload["model"], contract, factorized=ranks)
    summary = {"source": str(checkpoint), "checkpoint": str(run_dir / "model.pt"), "method": "lowrank",
               "config": config.model_dump(mode="json"), "report": report, "test_images": len(dataset.test),
               "before": before, "after": after}
    write_json(run_dir / "summary.json", summary)
    return summary
