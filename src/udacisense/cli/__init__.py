"""The ``udacisense`` command. Each module holds a group of commands, every parser beside its handler;
handlers parse flags and call the library. User mistakes raise :class:`UdaciSenseError`, printed here
as one line with exit status 2; a training job that produced no usable model raises :class:`TrainingFailed`
(exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from udacisense.cli import compress, deploy, pipeline, train
from udacisense.errors import TrainingFailed, UdaciSenseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="udacisense", description="Train, profile and shrink image classifiers for phones.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (train, compress, deploy, pipeline):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except UdaciSenseError as error:
        label = "TRAINING FAILED" if isinstance(error, TrainingFailed) else "error"
        print(f"udacisense: {label}: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("udacisense: interrupted; the same command with --resume continues from the last finished epoch or stage", file=sys.stderr)
        return 130
