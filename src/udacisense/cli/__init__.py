"""The ``udacisense`` command. Each module holds a group of commands, every parser beside its handler;
handlers parse flags and call the library. User mistakes raise :class:`UdaciSenseError`, printed here
as one line with exit status 2; a training job that produced no usable model raises :class:`TrainingFailed`
(exit status 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from udacisense.cli import compress, deploy, pipeline, train
from udacisense.cli.common import launch_under_torchrun
from udacisense.errors import TrainingFailed, UdaciSenseError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what is wrong, and where the help is) with exit status 2, like every
    other mistake, instead of the usage block plus the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"udacisense: error: {message.replace(chr(10), ' ')} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="udacisense", description="Train, profile and shrink image classifiers for phones.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (train, compress, deploy, pipeline):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None:
            if args.nproc < 1:
                raise UdaciSenseError("--nproc must be at least 1")
            if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
                return launch_under_torchrun(argv, args.nproc)
        return args.handler(args) or 0
    except UdaciSenseError as error:
        label = "TRAINING FAILED" if isinstance(error, TrainingFailed) else "error"
        one_line = str(error).replace("\r", "\\r").replace("\n", "\\n")  # user input quoted in a message keeps it on one line
        print(f"udacisense: {label}: {one_line}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("udacisense: interrupted; the same command with --resume continues from the last finished epoch or stage", file=sys.stderr)
        return 130
