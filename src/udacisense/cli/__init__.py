"""The ``udacisense`` command. Each module holds a group of commands, every parser beside its handler;
handlers parse flags and call the library. User mistakes raise :class:`UdaciSenseError`, printed here
as one line with exit status 2; a job that produced no usable model (:class:`TrainingFailed`, :class:`CompressionFailed`)
or an artifact that failed validation (:class:`ValidationFailed`) is one line after its banner, with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from udacisense.cli import compress, deploy, pipeline, train
from udacisense.cli.common import STATUS_FILE, launch_under_torchrun
from udacisense.errors import UdaciSenseError


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
        if int(os.environ.get("RANK", 0)) > 0:  # under torchrun every rank meets the same error: rank 0 says it
            return error.exit_status
        one_line = str(error).replace("\r", "\\r").replace("\n", "\\n")  # user input quoted in a message keeps it on one line
        print(f"udacisense: {error.label}: {one_line}", file=sys.stderr)
        if STATUS_FILE in os.environ:  # launched by --nproc: the launcher exits with this status too
            Path(os.environ[STATUS_FILE]).write_text(str(error.exit_status))
        return error.exit_status
    except RuntimeError as error:
        if "WORLD_SIZE" not in os.environ or not _lost_a_peer(error):
            raise  # a bug: keep its traceback
        print(f"udacisense: error: rank {os.environ.get('RANK', 0)} lost contact with another rank ({str(error).splitlines()[0][:160]})",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("udacisense: interrupted; the same command with --resume continues from the last finished epoch or stage", file=sys.stderr)
        return 130


def _lost_a_peer(error: RuntimeError) -> bool:
    """Whether a collective failed because another torchrun rank died (torchrun then names that rank)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and isinstance(error, getattr(distributed, "DistError", ())):
        return True
    return any(sign in str(error) for sign in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))
