"""Commands for a model on its own: ``train``, ``evaluate``, ``profile``, ``list``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from udacisense.cli.common import add_command, augment_argument, data_arguments, key_values, nproc_argument, optimizer_arguments, train_options
from udacisense.errors import UdaciSenseError
from udacisense.io import read_yaml

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


def add_commands(commands) -> None:
    train = add_command(commands, "train", "train a model and evaluate it on the test set", TRAIN_EXAMPLE, run_train)
    train.add_argument("--config", type=Path, help="YAML file with data/model/train sections; flags override it")
    train.add_argument("--model", help="registry name or path/to/file.py:callable (default mobilenet_v3_small)")
    train.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword, e.g. width_mult=0.75")
    data_arguments(train)
    train.add_argument("--train-subset", type=int, help="train on only this many images")
    train.add_argument("--val-fraction", type=float, help="share of the training set held out for validation (0.1)")
    augment_argument(train)
    optimizer_arguments(train)
    train.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    nproc_argument(train)
    train.add_argument("--track", choices=["mlflow"], help="log params, every epoch and the results to MLflow (tracking: section; "
                       "store: $MLFLOW_TRACKING_URI or SQLite in <runs-dir>/mlflow)")
    train.add_argument("--name", help="run folder name under --runs-dir (default baseline)")
    train.add_argument("--runs-dir", type=Path)
    group = train.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue runs/<name>/ from last.pt")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    evaluate = add_command(commands, "evaluate", "evaluate a checkpoint on the test (or val) split", EVALUATE_EXAMPLE, run_evaluate)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    data_arguments(evaluate, with_shape=False)
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.add_argument("--batch-size", type=int, default=512)
    evaluate.add_argument("--recalibrate-bn", action="store_true", help="re-estimate BatchNorm statistics on 50 training batches first")
    evaluate.add_argument("--output", type=Path, help="JSON file (default: eval.json beside the checkpoint)")

    profile = add_command(commands, "profile", "measure size, MACs, latency, memory and per-layer cost", PROFILE_EXAMPLE, run_profile)
    source = profile.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--model", help="profile an untrained registry model")
    profile.add_argument("--input-shape", default="1,28,28", help="C,H,W for --model (default 1,28,28)")
    profile.add_argument("--num-classes", type=int, default=10, help="classes for --model")
    profile.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")
    profile.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (a subprocess)")
    profile.add_argument("--output", type=Path, help="JSON file (default: profile.json beside the checkpoint)")

    add_command(commands, "list", "list registered models and data sets", "example:\n  udacisense list", run_list)


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
        raw = read_yaml(args.config) or {}
        if not isinstance(raw, dict):
            raise UdaciSenseError(f"config file {args.config} must hold a mapping with data/model/train sections")
    sections: dict[str, Any] = {key: dict(raw.get(key) or {}) for key in ("data", "model", "train")}
    overrides = {
        "data": {
            "name": args.data, "root": args.data_root, "channels": args.channels, "image_size": args.image_size,
            "train_subset": args.train_subset, "test_subset": args.test_subset, "val_fraction": args.val_fraction,
            "augment": args.augment,
        },
        "model": {"name": args.model},
        "train": train_options(args) | ({"threads": args.threads} if args.threads else {}),
    }
    for section, values in overrides.items():
        sections[section].update({key: value for key, value in values.items() if value is not None})
    model_kwargs = dict(sections["model"].get("kwargs") or {}) | key_values(args.model_arg, "--model-arg")
    if model_kwargs:
        sections["model"]["kwargs"] = model_kwargs
    top_level = {key: value for key, value in raw.items() if key not in sections}
    if args.name:
        top_level["name"] = args.name
    if args.runs_dir:
        top_level["runs_dir"] = args.runs_dir
    if args.track:
        top_level["tracking"] = dict(top_level.get("tracking") or {}) | {"backend": args.track}
    config = validate_config(RunConfig, {**top_level, **sections}, where="training config")
    summary = train_run(config, resume=args.resume, overwrite=args.overwrite)
    print(f"\ntest top-1 {summary['test_top1']:.2f}%  (top-5 {summary['test_top5']:.2f}%)  -> {summary['run']}/")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from udacisense.checkpoint import load_model
    from udacisense.data import dataset_for_contract
    from udacisense.evaluate import evaluate_on_split, format_evaluation
    from udacisense.io import write_json
    from udacisense.train import recalibrate_batchnorm

    model, payload = load_model(args.checkpoint)
    dataset = dataset_for_contract(payload["input"], args.data, args.data_root, args.test_subset)
    if args.recalibrate_bn:
        recalibrate_batchnorm(model, dataset.loader("train", 128, shuffle=True))
    result = evaluate_on_split(model, payload["input"], dataset, args.split, args.batch_size)
    output = args.output or args.checkpoint.parent / "eval.json"
    write_json(output, {"checkpoint": str(args.checkpoint), "split": args.split, **result})
    print(format_evaluation(result))
    verdict = payload.get("training") or {}
    if verdict.get("status") == "failed":
        print(f"WARNING: this checkpoint FAILED its training check: {verdict['reason']}")
    print(f"-> {output}")
    return 0


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


def run_list(args: argparse.Namespace) -> int:
    from udacisense.data import DATASETS
    from udacisense.formats import FORMATS
    from udacisense.models import MODELS
    from udacisense.stages import STAGES

    print("models:    " + ", ".join(MODELS.names()) + ", or path/to/file.py:callable")
    print("data sets: " + ", ".join(DATASETS.names()))
    print("stages:    " + ", ".join(STAGES.names()))
    print("formats:   " + ", ".join(FORMATS.names()))
    return 0
