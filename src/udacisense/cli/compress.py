"""Compression commands. ``prune``, ``quantize``, ``factorize`` and ``distill`` are one-stage pipelines: each
builds the recipe a user could have written (baseline: the given checkpoint; one stage from the flags,
whose names are the stage's parameter names) and runs it through the same runner as ``udacisense run``:
same checkpoints, journal, measurement, report and ``--resume``. ``sensitivity`` is an analysis, not a stage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from udacisense.cli.common import add_command, augment_argument, key_values, nproc_argument, optimizer_arguments, train_options
from udacisense.cli.fields import add_field_flags, field_values
from udacisense.errors import UdaciSenseError
from udacisense.pipeline.recipe import ExportSpec

EXPORT_FLAGS = ("min_agreement", "references")  # the recipe's export section, as far as a one-stage command needs it

PRUNE_EXAMPLE = """example:
  udacisense prune --checkpoint runs/baseline/best.pt --ratio 0.5 --epochs 10 --teacher self --name pruned50
  udacisense prune --checkpoint runs/baseline/best.pt --budget macs=0.35,params=0.3 --epochs 10 --teacher self
  udacisense prune --checkpoint runs/baseline/best.pt --method unstructured --ratio 0.7 --schedule gradual --epochs 6
  udacisense prune --checkpoint runs/baseline/best.pt --plan runs/sens/plan.json --epochs 10 --teacher self"""
QUANTIZE_EXAMPLE = """example:
  udacisense quantize --checkpoint runs/baseline/best.pt --method static --observer histogram
  udacisense quantize --checkpoint runs/baseline/best.pt --method static --max-drop 0.3   # mixed precision
  udacisense quantize --checkpoint runs/baseline/best.pt --method qat --epochs 2 --teacher self
  udacisense quantize --checkpoint runs/baseline/best.pt --method dynamic                 # the seed project's way"""
FACTORIZE_EXAMPLE = """example:
  udacisense factorize --checkpoint runs/baseline/best.pt --energy 0.9 --epochs 2 --teacher self
  udacisense factorize --checkpoint runs/baseline/best.pt --param-ratio 0.5 --layers classifier.0"""
DISTILL_EXAMPLE = """example:
  udacisense distill --teacher runs/large/best.pt --student mobilenet_v3_small --epochs 30 --name kd_small
  udacisense distill --teacher runs/large/best.pt --student mobilenet_v3_small --model-arg width_mult=0.5 \\
      --temperature 4 --alpha 0.7 --augment none --cache-teacher-logits"""
PRUNE_METHODS = {"channels": "prune_channels", "unstructured": "prune_unstructured"}  # --method: the stage it runs
FINE_TUNE_FLAGS = ("epochs", "lr", "batch_size", "seed", "device")  # the fine_tune fields the commands take as flags
SENSITIVITY_EXAMPLE = """example:
  udacisense sensitivity --checkpoint runs/baseline/best.pt --ratios 0.25,0.5,0.75 --target-macs 0.5"""


def add_commands(commands) -> None:
    from udacisense.stages import STAGES

    prune = add_command(commands, "prune", "prune a checkpoint (channels or weights), fine-tune, measure: a one-stage pipeline",
                        PRUNE_EXAMPLE, run_prune)
    _stage_arguments(prune)
    prune.add_argument("--method", choices=list(PRUNE_METHODS), default="channels",
                       help="; ".join(f"{method}: stage {stage}" for method, stage in PRUNE_METHODS.items()))
    add_field_flags(prune, {method: STAGES[stage].params for method, stage in PRUNE_METHODS.items()}, skip=("layer_ratios",))
    prune.add_argument("--plan", type=Path, help="channels: per-layer ratios from 'udacisense sensitivity --target-macs'")
    _fine_tune_arguments(prune)

    quantize = add_command(commands, "quantize", "quantize a checkpoint to int8 and measure it in its runtime: a one-stage pipeline",
                           QUANTIZE_EXAMPLE, run_quantize)
    _stage_arguments(quantize)
    add_field_flags(quantize, {"quantize": STAGES["quantize"].params})
    _fine_tune_arguments(quantize, lr=0.002)

    factorize = add_command(commands, "factorize", "low-rank (SVD) factorize Linear and 1x1 conv layers, fine-tune, measure",
                            FACTORIZE_EXAMPLE, run_factorize)
    _stage_arguments(factorize)
    add_field_flags(factorize, {"factorize": STAGES["factorize"].params})
    _fine_tune_arguments(factorize)

    distill = add_command(commands, "distill", "train a student on a teacher checkpoint's soft targets: a one-stage pipeline",
                          DISTILL_EXAMPLE, run_distill)
    _stage_arguments(distill, source="teacher")
    distill.add_argument("--student", default="scratch", help="a registry model or path/to/file.py:callable, or scratch "
                         "(the teacher's architecture, from scratch; default)")
    distill.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="student model keyword, e.g. width_mult=0.5")
    add_field_flags(distill, {"distill": STAGES["distill"].params})
    optimizer_arguments(distill)

    sensitivity = add_command(commands, "sensitivity", "per-layer channel-pruning sensitivity and a non-uniform plan",
                              SENSITIVITY_EXAMPLE, run_sensitivity)
    sensitivity.add_argument("--checkpoint", type=Path, required=True)
    sensitivity.add_argument("--ratios", default="0.25,0.5,0.75", help="ratios tried on each layer")
    sensitivity.add_argument("--importance", choices=["l1", "l2", "bn"], default="l2")
    sensitivity.add_argument("--val-images", type=int, default=2000, help="validation images scored per trial")
    sensitivity.add_argument("--target-macs", type=float, help="also plan per-layer ratios keeping at most this share of MACs")
    sensitivity.add_argument("--target-params", type=float, help="... and/or at most this share of parameters (both: both budgets hold)")
    sensitivity.add_argument("--data-root", type=Path)
    sensitivity.add_argument("--output", type=Path, help="folder (default: sensitivity/ beside the checkpoint)")


def _stage_arguments(parser: argparse.ArgumentParser, source: str = "checkpoint") -> None:
    """What every one-stage pipeline needs: its baseline checkpoint, data, run folder and measurement options."""
    parser.add_argument(f"--{source}", type=Path, required=True, dest="source",
                        help="the baseline checkpoint" + (" (the teacher)" if source == "teacher" else ""))
    parser.add_argument("--data", help="data set, if not the checkpoint's")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--train-subset", type=int, help="train on only this many images")
    parser.add_argument("--test-subset", type=int, help="measure on only this many test images")
    augment_argument(parser)
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--formats", default="", help="also export and validate these formats into a bundle, e.g. pte-int8,onnx")
    add_field_flags(parser, {"export": ExportSpec}, only=EXPORT_FLAGS)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")
    parser.add_argument("--name", help="run folder name (default: <checkpoint folder>_<command>)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    nproc_argument(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run folder: a finished stage is reused")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def _fine_tune_arguments(parser: argparse.ArgumentParser, lr: float | None = None) -> None:
    """The stage's fine_tune section (a few of its fields) and its distill section, from their models."""
    from udacisense.stages.registry import FineTuneConfig, TeacherConfig

    fine_tune = parser.add_argument_group("fine-tuning after the cut (with --epochs; none without)")
    add_field_flags(fine_tune, {"fine_tune": FineTuneConfig}, only=FINE_TUNE_FLAGS, show_defaults=False)
    if lr is not None:
        parser.set_defaults(lr=lr)
    add_field_flags(parser.add_argument_group("distillation while fine-tuning"), {"distill": TeacherConfig})


def _fine_tune(args: argparse.Namespace) -> dict[str, Any]:
    """The stage's fine_tune and distill sections from the flags (absent when not asked for)."""
    from udacisense.stages.registry import FineTuneConfig, TeacherConfig

    section: dict[str, Any] = {}
    if args.epochs:
        section["fine_tune"] = field_values(args, FineTuneConfig, only=FINE_TUNE_FLAGS)
    if teacher := field_values(args, TeacherConfig):
        section["distill"] = teacher
    return section


def run_stage(args: argparse.Namespace, stage: dict[str, Any]) -> dict[str, Any]:
    """Build the one-stage recipe for ``stage`` from the common flags, run it, and print what it measured."""
    from udacisense.checkpoint import load_checkpoint, training_data
    from udacisense.formats import parse_formats
    from udacisense.pipeline.recipe import validate_recipe
    from udacisense.pipeline.runner import require_validated_run, run_pipeline
    from udacisense.report import format_comparison, format_targets

    contract = load_checkpoint(args.source)["input"]
    # on the data it was trained on, a checkpoint's own root and validation split apply (an ImageFolder needs no --data-root)
    trained_on = training_data(args.source) if args.data in (None, contract["dataset"]) else {}
    data = {**trained_on, "name": args.data or contract["dataset"], "train_subset": args.train_subset, "test_subset": args.test_subset,
            "augment": args.augment, **({"root": args.data_root} if args.data_root is not None else {})}
    raw = {
        "name": args.name or f"{args.source.parent.name}_{args.command}",
        "description": f"udacisense {args.command} of {args.source}",
        "data": {key: value for key, value in data.items() if value is not None},
        "baseline": {"checkpoint": str(args.source)},
        "stages": [stage],
        "export": {"formats": parse_formats(args.formats) if args.formats else [], "latency_runs": args.runs,
                   **field_values(args, ExportSpec, only=EXPORT_FLAGS)},
        **({"threads": args.threads} if args.threads else {}),
    }
    result = run_pipeline(validate_recipe(raw), args.runs_dir, resume=args.resume, overwrite=args.overwrite)
    if "rank" in result:  # another torchrun rank than 0: rank 0 reports
        return result
    record = result["stages"][-1]
    print(f"\n{record['stage']}: {record['summary']}; measured on {result['baseline']['test_images']} test images "
          f"(latency: batch 1, p50, fresh process):")
    print(format_comparison(result))
    if result["deploy"]:
        print("\n" + format_targets(result["targets"]))
    built = ", ".join(record["artifacts"].values())
    print(f"-> {record['checkpoint']}" + (f", {built}" if built else "") + f"  (report: {result['report']['html']})")
    require_validated_run(result)
    return result


def _stage(args: argparse.Namespace, name: str, **fixed: Any) -> dict[str, Any]:
    """The recipe stage ``name`` from its flags (those the user set), its fine-tune and distillation, and ``fixed``."""
    from udacisense.stages import STAGES

    return {"stage": name, **field_values(args, STAGES[name].params), **_fine_tune(args), **fixed}


def run_prune(args: argparse.Namespace) -> int:
    from udacisense.stages import STAGES

    name = PRUNE_METHODS[args.method]
    for method, other in PRUNE_METHODS.items():  # a flag of the other method's stage only is a mistake, not silence
        for field in set(field_values(args, STAGES[other].params)) - set(STAGES[name].params.model_fields):
            raise UdaciSenseError(f"--{field.replace('_', '-')} is a setting of {other}; use it with --method {method}")
    fixed: dict[str, Any] = {}
    if args.plan is not None:
        if name != "prune_channels":
            raise UdaciSenseError("--plan holds per-layer channel ratios; use it with --method channels")
        fixed["layer_ratios"] = _plan_ratios(args.plan)
    if name == "prune_channels" and len([rule for rule in (args.ratio, args.budget, args.plan) if rule is not None]) != 1:
        raise UdaciSenseError("give one of --ratio (share of channels to remove), --budget (e.g. macs=0.35) or --plan (per-layer ratios)")
    if name == "prune_unstructured" and args.ratio is None:
        raise UdaciSenseError("give --ratio, the share of weights to set to zero, e.g. --ratio 0.5")
    run_stage(args, _stage(args, name, **fixed))
    return 0


def _plan_ratios(plan: Path) -> dict[str, float]:
    if not plan.is_file():
        raise UdaciSenseError(f"plan {plan} does not exist; make one with 'udacisense sensitivity --target-macs 0.5'")
    try:
        return json.loads(plan.read_text())["layer_ratios"]
    except (ValueError, KeyError, TypeError):
        raise UdaciSenseError(f"{plan} is not a plan from 'udacisense sensitivity' (no layer_ratios)") from None


def run_quantize(args: argparse.Namespace) -> int:
    run_stage(args, _stage(args, "quantize"))
    return 0


def run_factorize(args: argparse.Namespace) -> int:
    run_stage(args, _stage(args, "factorize"))
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from udacisense.stages import STAGES

    student: Any = args.student
    if student not in ("scratch", "current"):
        student = {"model": args.student, "model_kwargs": key_values(args.model_arg, "--model-arg")}
    elif args.model_arg:
        raise UdaciSenseError("--model-arg sets the keywords of a --student model; name one, e.g. --student mobilenet_v3_small")
    run_stage(args, {"stage": "distill", "teacher": "baseline", "student": student, "train": train_options(args),
                     **field_values(args, STAGES["distill"].params)})
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    import torch

    from udacisense.checkpoint import load_model
    from udacisense.data import dataset_for_contract
    from udacisense.io import write_json
    from udacisense.techniques.sensitivity import layer_sensitivity, plan_layer_ratios, save_sensitivity

    try:
        ratios = tuple(float(part) for part in args.ratios.split(","))
    except ValueError:
        raise UdaciSenseError(f"--ratios '{args.ratios}' must be a comma list of numbers such as 0.25,0.5,0.75") from None
    model, payload = load_model(args.checkpoint)
    dataset = dataset_for_contract(payload["input"], root=args.data_root)
    example = torch.zeros(payload["input"]["shape"])
    batches = dataset.validation_batches(args.val_images)
    result = layer_sensitivity(model, example, batches, dataset.classes, ratios, args.importance)
    output = args.output or args.checkpoint.parent / "sensitivity"
    paths = save_sensitivity(result, output)
    print(f"{len(result['layers'])} layers x {len(ratios)} ratios on {sum(len(labels) for _, labels in batches)} validation images "
          f"(baseline {result['baseline']['top1']:.2f}%) -> {paths['json']}, {paths['png']}")
    budgets = {metric: target for metric, target in (("macs", args.target_macs), ("params", args.target_params)) if target is not None}
    if budgets:
        plan = plan_layer_ratios(model, example, result, budgets, args.importance)
        plan_path = write_json(output / "plan.json", plan)
        kept = ", ".join(f"{100 * plan['achieved'][metric]:.1f}% of {metric} (budget {100 * target:.0f}%)" for metric, target in budgets.items())
        print(f"plan keeps {kept} by pruning {len(plan['layer_ratios'])} layers -> {plan_path}; "
              f"use it with 'udacisense prune --plan {plan_path}'")
    return 0
