"""The ``udacisense`` command: thin wrappers over library functions.

User mistakes raise :class:`UdaciSenseError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from udacisense.errors import UdaciSenseError

TRAIN_EXAMPLE = """example:
  udacisense train --model mobilenet_v3_small --data fashion-mnist --epochs 5 --train-subset 20000 --name demo
  udacisense train --model my_models.py:TinyNet --data cifar10 --data-root ~/data/cifar-10-batches-py
  udacisense train --name demo --resume          # continue an interrupted run from runs/demo/last.pt"""
EVALUATE_EXAMPLE = """example:
  udacisense evaluate --checkpoint runs/demo/best.pt
  udacisense evaluate --checkpoint runs/demo/best.pt --split val --recalibrate-bn"""
PROFILE_EXAMPLE = """example:
  udacisense profile --checkpoint runs/demo/best.pt
  udacisense profile --model mobilenet_v3_large --input-shape 3,32,32 --runs 500"""

DISTILL_EXAMPLE = """example:
  udacisense distill --teacher runs/large/best.pt --model mobilenet_v3_small --epochs 30 --name kd_small
  udacisense distill --teacher runs/large/best.pt --temperature 4 --alpha 0.7 --no-augment --cache-teacher-logits"""
PRUNE_EXAMPLE = """example:
  udacisense prune --checkpoint runs/baseline/best.pt --method channels --ratio 0.5 --epochs 10 --self-distill --name pruned50
  udacisense prune --checkpoint runs/baseline/best.pt --method unstructured --ratio 0.7 --schedule gradual --epochs 6
  udacisense prune --checkpoint runs/baseline/best.pt --plan runs/sens/plan.json --epochs 10 --self-distill"""
SENSITIVITY_EXAMPLE = """example:
  udacisense sensitivity --checkpoint runs/baseline/best.pt --ratios 0.25,0.5,0.75 --target-macs 0.5"""
QUANTIZE_EXAMPLE = """example:
  udacisense quantize --checkpoint runs/baseline/best.pt --method static --observer histogram
  udacisense quantize --checkpoint runs/baseline/best.pt --method static --max-drop 0.3   # mixed precision
  udacisense quantize --checkpoint runs/baseline/best.pt --method qat --epochs 2 --self-distill
  udacisense quantize --checkpoint runs/baseline/best.pt --method dynamic                 # the seed project's way"""
FACTORIZE_EXAMPLE = """example:
  udacisense factorize --checkpoint runs/baseline/best.pt --energy 0.9 --epochs 2 --self-distill
  udacisense factorize --checkpoint runs/baseline/best.pt --param-ratio 0.5 --layers classifier.0"""
RUN_EXAMPLE = """example:
  udacisense run recipes/quickstart.yaml                   # or just: udacisense run quickstart
  udacisense run mobile --set prune.fine_tune.epochs=10 --set targets.max_accuracy_drop=1.5
  udacisense run mobile --resume                           # continue after a crash; finished stages are reused
  udacisense run mobile --strict                           # exit status 1 when a target is missed"""
COMPARE_EXAMPLE = """example:
  udacisense compare runs/seed runs/mobile --output runs/compare"""
EXPORT_EXAMPLE = """example:
  udacisense export --checkpoint runs/demo/best.pt --formats pte,pte-int8,onnx,ptl
  udacisense verify runs/demo/deploy"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except UdaciSenseError as error:
        print(f"udacisense: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("udacisense: interrupted; the same command with --resume continues from the last finished epoch or stage", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udacisense", description="Train, profile and shrink image classifiers for phones."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _command(commands, "train", "train a model and evaluate it on the test set", TRAIN_EXAMPLE, run_train)
    _train_arguments(train)
    distill = _command(commands, "distill", "train a student with a teacher's soft targets (knowledge distillation)", DISTILL_EXAMPLE, run_train)
    distill.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (same input shape and classes)")
    _distill_arguments(distill)
    distill.add_argument("--cache-teacher-logits", action="store_true", help="compute teacher logits once (needs --no-augment)")
    _train_arguments(distill)

    prune = _command(commands, "prune", "prune a checkpoint (channels or weights), fine-tune, and measure before/after", PRUNE_EXAMPLE, run_prune)
    prune.add_argument("--checkpoint", type=Path, required=True)
    prune.add_argument("--method", choices=["channels", "unstructured"], default="channels")
    prune.add_argument("--ratio", type=float, help="channels: share removed per layer; unstructured: weight sparsity")
    prune.add_argument("--plan", type=Path, help="per-layer ratios from 'udacisense sensitivity --target-macs' (channels)")
    prune.add_argument("--importance", choices=["l1", "l2", "bn", "taylor"], default="l2", help="channel ranking (channels)")
    prune.add_argument("--scope", help="channels: uniform (default) or global; unstructured: global (default) or layer")
    prune.add_argument("--steps", type=int, default=1, help="iterative channel pruning: prune/fine-tune this many times")
    prune.add_argument("--schedule", choices=["one-shot", "gradual"], default="one-shot", help="unstructured sparsity schedule")
    prune.add_argument("--protect", default="", help="comma list of layer names never pruned")
    prune.add_argument("--self-distill", action="store_true", help="fine-tune with the unpruned model as teacher")
    prune.add_argument("--teacher", type=Path, help="fine-tune with this checkpoint as teacher instead")
    _distill_arguments(prune)
    _fine_tune_arguments(prune)

    quantize = _command(commands, "quantize", "quantize a checkpoint to int8 and measure it in its runtime", QUANTIZE_EXAMPLE, run_quantize)
    quantize.add_argument("--checkpoint", type=Path, required=True)
    quantize.add_argument("--method", choices=["static", "qat", "dynamic"], default="static")
    quantize.add_argument("--backend", default="xnnpack", help="quantizer backend (xnnpack; x86 from Python only)")
    quantize.add_argument("--observer", choices=["histogram", "minmax", "moving_average"], default="histogram")
    quantize.add_argument("--calibration-images", type=int, default=256)
    quantize.add_argument("--float-layers", default="", help="comma list of layers kept in fp32")
    quantize.add_argument("--max-drop", type=float, help="mixed precision: keep sensitive layers fp32 until the val drop is within this (pt)")
    quantize.add_argument("--freeze-bn-epoch", type=int, help="QAT: fix BatchNorm statistics from this epoch")
    quantize.add_argument("--freeze-observer-epoch", type=int, help="QAT: fix quantization ranges from this epoch")
    quantize.add_argument("--self-distill", action="store_true", help="QAT with the fp32 model as teacher")
    _distill_arguments(quantize)
    _fine_tune_arguments(quantize, default_lr=0.002)

    factorize = _command(commands, "factorize", "low-rank (SVD) factorize Linear and 1x1 conv layers, fine-tune, measure", FACTORIZE_EXAMPLE, run_factorize)
    factorize.add_argument("--checkpoint", type=Path, required=True)
    factorize.add_argument("--energy", type=float, help="keep this share of each layer's spectral energy (default 0.9)")
    factorize.add_argument("--param-ratio", type=float, help="or keep this share of each layer's parameters")
    factorize.add_argument("--layers", default="", help="comma list of layers (default: all eligible)")
    factorize.add_argument("--self-distill", action="store_true", help="fine-tune with the unfactorized model as teacher")
    _distill_arguments(factorize)
    _fine_tune_arguments(factorize)

    sensitivity = _command(commands, "sensitivity", "per-layer channel-pruning sensitivity and a non-uniform plan", SENSITIVITY_EXAMPLE, run_sensitivity)
    sensitivity.add_argument("--checkpoint", type=Path, required=True)
    sensitivity.add_argument("--ratios", default="0.25,0.5,0.75", help="ratios tried on each layer")
    sensitivity.add_argument("--importance", choices=["l1", "l2", "bn"], default="l2")
    sensitivity.add_argument("--val-images", type=int, default=2000, help="validation images scored per trial")
    sensitivity.add_argument("--target-macs", type=float, help="also plan per-layer ratios keeping at most this share of MACs")
    sensitivity.add_argument("--target-params", type=float, help="... and/or at most this share of parameters (both: both budgets hold)")
    sensitivity.add_argument("--data-root", type=Path)
    sensitivity.add_argument("--output", type=Path, help="folder (default: sensitivity/ beside the checkpoint)")

    evaluate = _command(commands, "evaluate", "evaluate a checkpoint on the test (or val) split", EVALUATE_EXAMPLE, run_evaluate)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    _data_arguments(evaluate, with_shape=False)
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.add_argument("--batch-size", type=int, default=512)
    evaluate.add_argument("--recalibrate-bn", action="store_true", help="re-estimate BatchNorm statistics on 50 training batches first")
    evaluate.add_argument("--output", type=Path, help="JSON file (default: eval.json beside the checkpoint)")

    profile = _command(commands, "profile", "measure size, MACs, latency, memory and per-layer cost", PROFILE_EXAMPLE, run_profile)
    source = profile.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--model", help="profile an untrained registry model")
    profile.add_argument("--input-shape", default="1,28,28", help="C,H,W for --model (default 1,28,28)")
    profile.add_argument("--num-classes", type=int, default=10, help="classes for --model")
    profile.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")
    profile.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (a subprocess)")
    profile.add_argument("--output", type=Path, help="JSON file (default: profile.json beside the checkpoint)")

    export = _command(commands, "export", "export, validate and benchmark mobile artifacts into a bundle", EXPORT_EXAMPLE, run_export)
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--formats", default="pte,pte-int8,onnx,onnx-int8,ptl",
                        help="comma list of pte, pte-int8, onnx, onnx-int8, ptl, coreml")
    export.add_argument("--output", type=Path, help="bundle folder (default: deploy/ beside the checkpoint)")
    export.add_argument("--calibration-images", type=int, default=256, help="training images for int8 calibration")
    export.add_argument("--data-root", type=Path, help="where the checkpoint's data set lives, if not the default")
    export.add_argument("--test-subset", type=int, help="validate on only this many test images (default: all)")
    export.add_argument("--min-agreement", type=float, default=99.0, help="top-1 agreement with the source, percent")
    export.add_argument("--max-abs-diff", type=float, default=1e-3, help="largest fp32 logit difference allowed")
    export.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")

    verify = _command(commands, "verify", "re-check a bundle's hashes and golden outputs", "example:\n  udacisense verify runs/demo/deploy", run_verify)
    verify.add_argument("bundle", type=Path)

    run = _command(commands, "run", "run a recipe: baseline, compression stages, export, targets and report", RUN_EXAMPLE, run_recipe)
    _recipe_arguments(run)
    run.add_argument("--name", help="run folder name (default: the recipe's name)")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"))
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue runs/<name>/: reuse finished stages whose config is unchanged")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    run.add_argument("--strict", action="store_true", help="exit with status 1 when any target is missed")
    run.add_argument("--retime", action="store_true", help="with --resume: measure every latency again (e.g. on a quiet machine)")

    check = _command(commands, "check", "validate a recipe without running it", "example:\n  udacisense check recipes/mobile.yaml", run_check)
    _recipe_arguments(check)
    _command(commands, "recipes", "list the shipped recipes and the registered stages", "example:\n  udacisense recipes", run_recipes)

    compare = _command(commands, "compare", "compare finished runs side by side, with a Pareto plot", COMPARE_EXAMPLE, run_compare)
    compare.add_argument("runs", type=Path, nargs="+", help="run folders holding result.json")
    compare.add_argument("--output", type=Path, default=Path("runs/compare"), help="folder for compare.md, compare.json and pareto.png")

    _command(commands, "list", "list registered models and data sets", "example:\n  udacisense list", run_list)
    return parser


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML file, or the name of a shipped one (see 'udacisense recipes')")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a recipe value: <stage id>.<param>=value or <section>.<key>=value (repeatable)")


def _train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--config", type=Path, help="YAML file with data/model/train sections; flags override it")
    train.add_argument("--model", help="registry name or path/to/file.py:callable (default mobilenet_v3_small)")
    train.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword, e.g. width_mult=0.75")
    _data_arguments(train)
    train.add_argument("--train-subset", type=int, help="train on only this many images")
    train.add_argument("--val-fraction", type=float, help="share of the training set held out for validation (0.1)")
    train.add_argument("--no-augment", action="store_true", help="turn off random crop and flip")
    _optimizer_arguments(train)
    train.add_argument("--name", help="run folder name under --runs-dir (default baseline)")
    train.add_argument("--runs-dir", type=Path)
    group = train.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue runs/<name>/ from last.pt")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def _optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--schedule", choices=["cosine", "onecycle"])
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])


def _distill_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, help="softening temperature T (default 4)")
    parser.add_argument("--alpha", type=float, help="weight of the teacher's soft targets (default 0.7)")


def _fine_tune_arguments(parser: argparse.ArgumentParser, default_lr: float = 0.02) -> None:
    parser.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (0: none)")
    parser.add_argument("--lr", type=float, default=default_lr, help="fine-tuning peak learning rate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="data set, if not the checkpoint's")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--train-subset", type=int, help="fine-tune on only this many images")
    parser.add_argument("--test-subset", type=int, help="measure on only this many test images")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--name", help="run folder name (default: <checkpoint folder>_<command>)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def _command(commands, name: str, help_text: str, example: str, handler) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=help_text, description=help_text, epilog=example, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def _data_arguments(parser: argparse.ArgumentParser, with_shape: bool = True) -> None:
    parser.add_argument("--data", help="fashion-mnist (default), cifar10, imagefolder, synthetic")
    parser.add_argument("--data-root", type=Path, help="data folder (fashion-mnist: $UDACISENSE_FASHION_MNIST or the Debian path)")
    if with_shape:
        parser.add_argument("--channels", type=int, choices=[1, 3], help="convert images to 1 or 3 channels")
        parser.add_argument("--image-size", type=int, help="resize images to this square size")
    parser.add_argument("--test-subset", type=int, help="evaluate on only this many test images")


def run_train(args: argparse.Namespace) -> int:
    from udacisense.config import RunConfig, validate_config
    from udacisense.train import train_run

    raw: dict[str, Any] = {}
    saved_config = (args.runs_dir or Path("runs")) / (args.name or "baseline") / "config.yaml"
    if args.resume and not args.config and saved_config.is_file():
        raw = yaml.safe_load(saved_config.read_text()) or {}  # resume repeats the original options
    elif args.config:
        if not args.config.is_file():
            raise UdaciSenseError(f"config file {args.config} does not exist")
        raw = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(raw, dict):
            raise UdaciSenseError(f"config file {args.config} must hold a mapping with data/model/train sections")
    sections: dict[str, Any] = {key: dict(raw.get(key) or {}) for key in ("data", "model", "train")}
    overrides = {
        "data": {
            "name": args.data, "root": args.data_root, "channels": args.channels, "image_size": args.image_size,
            "train_subset": args.train_subset, "test_subset": args.test_subset, "val_fraction": args.val_fraction,
            "augment": False if args.no_augment else None,
        },
        "model": {"name": args.model},
        "train": {
            "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
            "weight_decay": args.weight_decay, "schedule": args.schedule, "label_smoothing": args.label_smoothing,
            "seed": args.seed, "threads": args.threads, "device": args.device,
        },
    }
    for section, values in overrides.items():
        sections[section].update({key: value for key, value in values.items() if value is not None})
    model_kwargs = dict(sections["model"].get("kwargs") or {})
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UdaciSenseError(f"--model-arg '{item}' must look like KEY=VALUE, e.g. width_mult=0.75")
        model_kwargs[key] = yaml.safe_load(value)  # 0.75 -> float, true -> bool
    if model_kwargs:
        sections["model"]["kwargs"] = model_kwargs
    if getattr(args, "teacher", None):
        distill = dict(raw.get("distill") or {})
        distill.update({"teacher": args.teacher, "temperature": args.temperature, "alpha": args.alpha,
                        "cache_teacher_logits": args.cache_teacher_logits or None})
        sections["distill"] = {key: value for key, value in distill.items() if value is not None}
    top_level = {key: value for key, value in raw.items() if key not in sections}
    if args.name:
        top_level["name"] = args.name
    if args.runs_dir:
        top_level["runs_dir"] = args.runs_dir
    config = validate_config(RunConfig, {**top_level, **sections}, where="training config")
    summary = train_run(config, resume=args.resume, overwrite=args.overwrite)
    print(f"\ntest top-1 {summary['test_top1']:.2f}%  (top-5 {summary['test_top5']:.2f}%)  -> {summary['run']}/")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    import json

    from udacisense.compress.apply import format_comparison, prune_checkpoint
    from udacisense.compress.channels import ChannelPruneConfig
    from udacisense.compress.prune import UnstructuredPruneConfig
    from udacisense.config import validate_config

    protect = tuple(name for name in args.protect.split(",") if name)
    if args.method == "channels":
        raw: dict[str, Any] = {"ratio": args.ratio if args.ratio is not None else 0.0, "importance": args.importance,
                               "steps": args.steps, "protect": protect, "scope": args.scope or "uniform"}
        if args.plan:
            if not args.plan.is_file():
                raise UdaciSenseError(f"plan {args.plan} does not exist; make one with 'udacisense sensitivity --target-macs 0.5'")
            try:
                raw["layer_ratios"] = json.loads(args.plan.read_text())["layer_ratios"]
            except (ValueError, KeyError, TypeError):
                raise UdaciSenseError(f"{args.plan} is not a plan from 'udacisense sensitivity' (no layer_ratios)") from None
        elif args.ratio is None:
            raise UdaciSenseError("give --ratio (share of channels to remove) or --plan (per-layer ratios)")
        config = validate_config(ChannelPruneConfig, raw, where="channel pruning options")
    else:
        if args.plan:
            raise UdaciSenseError("--plan holds per-layer channel ratios; use it with --method channels")
        if args.ratio is None:
            raise UdaciSenseError("give --ratio, the share of weights to set to zero, e.g. --ratio 0.5")
        config = validate_config(
            UnstructuredPruneConfig,
            {"sparsity": args.ratio, "scope": args.scope or "global", "schedule": args.schedule, "exclude": protect},
            where="unstructured pruning options",
        )
    train_config, distill = _fine_tune_configs(args)
    run_dir, logger = _compression_run(args, "pruned")
    summary = prune_checkpoint(
        args.checkpoint, run_dir, config, train_config, distill, augment=not args.no_augment, logger=logger, **_data_options(args)
    )
    print(f"\n{summary['method']} pruning, measured on {summary['test_images']} test images:")
    print(format_comparison(summary["before"], summary["after"]))
    print(f"-> {summary['checkpoint']}  ({run_dir / 'summary.json'})")
    return 0


def _fine_tune_configs(args: argparse.Namespace):
    """The fine-tuning TrainConfig (None without --epochs) and DistillConfig (None without a teacher)."""
    from udacisense.config import DistillConfig, TrainConfig, validate_config

    train_config = None
    if args.epochs:
        train_config = validate_config(
            TrainConfig,
            {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "schedule": "cosine",
             "seed": args.seed, "threads": args.threads, "device": args.device},
            where="fine-tuning options",
        )
    distill = None
    if args.self_distill or getattr(args, "teacher", None):
        options = {"teacher": getattr(args, "teacher", None), "temperature": args.temperature, "alpha": args.alpha}
        distill = validate_config(DistillConfig, {k: v for k, v in options.items() if v is not None}, where="distillation options")
    return train_config, distill


def _compression_run(args: argparse.Namespace, suffix: str):
    from udacisense.runs import get_logger, prepare_run_dir

    run_dir = prepare_run_dir(args.runs_dir, args.name or f"{args.checkpoint.parent.name}_{suffix}", overwrite=args.overwrite)
    return run_dir, get_logger(run_dir, args.command)


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    from udacisense.compress.apply import DataOptions

    return {"data": DataOptions(args.data, args.data_root, args.train_subset, args.test_subset)}


def run_quantize(args: argparse.Namespace) -> int:
    from udacisense.compress.apply import format_quantization, quantize_checkpoint
    from udacisense.compress.quantize import QuantizeConfig
    from udacisense.config import validate_config

    config = validate_config(QuantizeConfig, {
        "method": args.method, "backend": args.backend, "observer": args.observer, "calibration_images": args.calibration_images,
        "float_layers": tuple(name for name in args.float_layers.split(",") if name),
        "freeze_batchnorm_epoch": args.freeze_bn_epoch, "freeze_observer_epoch": args.freeze_observer_epoch,
    }, where="quantization options")
    train_config, distill = _fine_tune_configs(args)
    run_dir, logger = _compression_run(args, config.method)
    summary = quantize_checkpoint(args.checkpoint, run_dir, config, train_config, distill, max_drop=args.max_drop,
                                  logger=logger, **_data_options(args))
    print(f"\n{config.method} int8, measured in its runtime on {summary['test_images']} test images (batch 1, p50):")
    print(format_quantization(summary))
    print(f"-> {run_dir / summary['artifact']['file']}  ({run_dir / 'summary.json'})")
    return 0


def run_factorize(args: argparse.Namespace) -> int:
    from udacisense.compress.apply import factorize_checkpoint, format_comparison
    from udacisense.compress.lowrank import LowRankConfig
    from udacisense.config import validate_config

    config = validate_config(LowRankConfig, {
        "energy": args.energy, "param_ratio": args.param_ratio, "layers": tuple(name for name in args.layers.split(",") if name),
    }, where="factorization options")
    train_config, distill = _fine_tune_configs(args)
    run_dir, logger = _compression_run(args, "lowrank")
    summary = factorize_checkpoint(args.checkpoint, run_dir, config, train_config, distill, logger=logger, **_data_options(args))
    for name, reason in summary["report"]["skipped"].items():
        print(f"skipped {name}: {reason}")
    print(f"\nfactorized {len(summary['report']['factorized'])} layers, measured on {summary['test_images']} test images:")
    print(format_comparison(summary["before"], summary["after"]))
    print(f"-> {summary['checkpoint']}  ({run_dir / 'summary.json'})")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    import torch

    from udacisense.checkpoint import load_model
    from udacisense.compress.sensitivity import layer_sensitivity, plan_layer_ratios, save_sensitivity
    from udacisense.data import dataset_for_contract
    from udacisense.io import write_json

    try:
        ratios = tuple(float(part) for part in args.ratios.split(","))
    except ValueError:
        raise UdaciSenseError(f"--ratios '{args.ratios}' must be a comma list of numbers such as 0.25,0.5,0.75") from None
    model, payload = load_model(args.checkpoint)
    dataset = dataset_for_contract(payload["input"], root=args.data_root)
    example = torch.zeros(payload["input"]["shape"])
    val = dataset.val if len(dataset.val) else dataset.train
    images = dataset.normalization.apply(val.images[: args.val_images])
    batches = list(zip(images.split(500), val.labels[: args.val_images].split(500)))
    result = layer_sensitivity(model, example, batches, dataset.classes, ratios, args.importance)
    output = args.output or args.checkpoint.parent / "sensitivity"
    paths = save_sensitivity(result, output)
    print(f"{len(result['layers'])} layers x {len(ratios)} ratios on {len(images)} validation images "
          f"(baseline {result['baseline']['top1']:.2f}%) -> {paths['json']}, {paths['png']}")
    budgets = {metric: target for metric, target in (("macs", args.target_macs), ("params", args.target_params)) if target is not None}
    if budgets:
        plan = plan_layer_ratios(model, example, result, budgets, args.importance)
        plan_path = write_json(output / "plan.json", plan)
        kept = ", ".join(f"{100 * plan['achieved'][metric]:.1f}% of {metric} (budget {100 * target:.0f}%)" for metric, target in budgets.items())
        print(f"plan keeps {kept} by pruning {len(plan['layer_ratios'])} layers -> {plan_path}; "
              f"use it with 'udacisense prune --plan {plan_path}'")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from udacisense.checkpoint import load_model
    from udacisense.data import dataset_for_contract
    from udacisense.io import write_json
    from udacisense.train import recalibrate_batchnorm

    model, payload = load_model(args.checkpoint)
    dataset = dataset_for_contract(payload["input"], args.data, args.data_root, args.test_subset)
    if args.recalibrate_bn:
        recalibrate_batchnorm(model, dataset.loader("train", 128, shuffle=True))
    result = evaluate_checkpoint_on(model, payload["input"], dataset, args.split, args.batch_size)
    output = args.output or args.checkpoint.parent / "eval.json"
    write_json(output, {"checkpoint": str(args.checkpoint), "split": args.split, **result})
    print(format_evaluation(result))
    print(f"-> {output}")
    return 0


def evaluate_checkpoint_on(model, contract: dict, dataset, split: str, batch_size: int) -> dict:
    """Evaluate after checking that the data matches the model's input contract."""
    from udacisense.checkpoint import check_input_shape
    from udacisense.evaluate import evaluate

    check_input_shape(getattr(dataset, split).images[:1].float(), contract)
    return evaluate(model, dataset.loader(split, batch_size), dataset.classes, progress=True)


def format_evaluation(result: dict) -> str:
    lines = [f"top-1 {result['top1']:.2f}%   top-5 {result['top5']:.2f}%   loss {result['loss']:.4f}   ({result['count']} images)"]
    lines += [f"  {name:<16} {accuracy:6.2f}%" for name, accuracy in result["per_class_accuracy"].items() if accuracy is not None]
    return "\n".join(lines)


def run_profile(args: argparse.Namespace) -> int:
    from udacisense.checkpoint import load_model
    from udacisense.io import write_json
    from udacisense.models import create_model
    from udacisense.profile import format_profile, profile_model

    if args.checkpoint:
        model, payload = load_model(args.checkpoint)
        input_shape = tuple(payload["input"]["shape"])
        output = args.output or args.checkpoint.parent / "profile.json"
    else:
        try:
            channels, height, width = (int(part) for part in args.input_shape.split(","))
        except ValueError:
            raise UdaciSenseError(f"--input-shape '{args.input_shape}' must be C,H,W such as 1,28,28") from None
        model = create_model(args.model, num_classes=args.num_classes, in_channels=channels)
        input_shape = (1, channels, height, width)
        output = args.output or Path("runs") / f"profile_{args.model.replace('/', '_').replace(':', '_')}.json"
    result = profile_model(model, input_shape, runs=args.runs, memory=not args.no_memory)
    write_json(output, result)
    print(format_profile(result))
    print(f"-> {output}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from udacisense.deploy.validate import Tolerances
    from udacisense.export import parse_formats
    from udacisense.export.bundle import build_bundle, format_table, remove_bundle, verify_bundle

    formats = parse_formats(args.formats)
    output = args.output or args.checkpoint.parent / "deploy"
    remove_bundle(output)
    print(f"exporting {args.checkpoint} to {output}/ as {', '.join(formats)}")
    manifest = build_bundle(
        args.checkpoint, output, formats,
        calibration_images=args.calibration_images, data_root=args.data_root, test_subset=args.test_subset,
        tolerances=Tolerances(args.min_agreement, args.max_abs_diff), latency_runs=args.runs,
    )
    print(f"\nvalidated on {manifest['test_images']} test images, latency at batch 1 (p50):")
    print(format_table(manifest))
    problems = verify_bundle(output)
    failed = [kind for kind, entry in manifest["artifacts"].items() if not entry.get("validation", {"passed": True})["passed"]]
    print(f"\nbundle {'verified' if not problems else 'NOT verified: ' + '; '.join(problems)} -> {output}/manifest.json")
    if failed:
        print(f"validation FAILED for: {', '.join(failed)}")
    return 1 if problems or failed else 0


def run_verify(args: argparse.Namespace) -> int:
    from udacisense.export.bundle import verify_bundle

    problems = verify_bundle(args.bundle)
    for problem in problems:
        print(f"FAIL {problem}")
    print("bundle verified: hashes and golden outputs match" if not problems else f"{len(problems)} problem(s) in {args.bundle}")
    return 1 if problems else 0


def run_recipe(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import load_recipe
    from udacisense.pipeline.runner import format_targets, run_pipeline

    pipeline = load_recipe(args.recipe, args.overrides)
    if args.retime and not args.resume:
        raise UdaciSenseError("--retime re-measures a finished run; add --resume")
    result = run_pipeline(pipeline, args.runs_dir, resume=args.resume, overwrite=args.overwrite, name=args.name, retime=args.retime)
    print(f"\ntargets, checked on {result['primary']} measured in its runtime on {result['baseline']['test_images']} test images:")
    print(format_targets(result["targets"]))
    print(f"\nreport: {result['report']['html']}  (also {result['report']['markdown']})")
    missed = [row["target"] for row in result["targets"] if not row["passed"]]
    return 1 if missed and args.strict else 0


def run_check(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import load_recipe

    pipeline = load_recipe(args.recipe, args.overrides)
    recipe = pipeline.recipe
    baseline = recipe.baseline.checkpoint or f"{recipe.baseline.model} trained {recipe.baseline.train.epochs} epochs"
    print(f"recipe '{recipe.name}' is valid: data {recipe.data.name}, baseline {baseline}")
    for stage in pipeline.stages:
        print(f"  {stage.index}. {stage.id} ({stage.kind})")
    print(f"  export {', '.join(recipe.export.formats)}; targets checked on {recipe.export.formats[0]}")
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import RECIPES_DIR, list_recipes
    from udacisense.pipeline.stages import list_stages

    print(f"recipes ({RECIPES_DIR}):")
    for name, description in list_recipes():
        print(f"  {name:<12} {description}")
    print("stages:")
    for name, summary in list_stages():
        print(f"  {name:<19} {summary}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from udacisense.report.compare import compare_runs

    table, paths = compare_runs(args.runs, args.output)
    print(table)
    print(f"-> {paths['markdown']}, {paths['plot']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from udacisense.data import list_datasets
    from udacisense.models import list_models

    print("models:    " + ", ".join(list_models()) + ", or path/to/file.py:callable")
    print("data sets: " + ", ".join(list_datasets()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
