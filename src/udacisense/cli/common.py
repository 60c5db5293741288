"""Helpers shared by the command modules: subcommand creation and the flag groups several commands use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from udacisense.errors import UdaciSenseError
from udacisense.io import parse_yaml

STATUS_FILE = "UDACISENSE_STATUS_FILE"  # under --nproc: where rank 0 leaves the exit status of a user error for the launcher


def add_command(commands, name: str, help_text: str, example: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with ``example``."""
    parser = commands.add_parser(name, help=help_text, description=help_text, epilog=example,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def data_arguments(parser: argparse.ArgumentParser, with_shape: bool = True) -> None:
    parser.add_argument("--data", help="fashion-mnist (default), cifar10, imagefolder, synthetic")
    parser.add_argument("--data-root", type=Path, help="data folder (fashion-mnist: $UDACISENSE_FASHION_MNIST or the Debian path)")
    if with_shape:
        parser.add_argument("--channels", type=int, choices=[1, 3], help="convert images to 1 or 3 channels")
        parser.add_argument("--image-size", type=int, help="resize images to this square size")
    parser.add_argument("--test-subset", type=int, help="evaluate on only this many test images")


def augment_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--augment", metavar="OPS", help="training augmentation: crop,flip,erasing in any combination, or none "
                        "(default: crop,flip for fashion-mnist and cifar10; crop for imagefolder, whose classes may not survive a mirror)")


def optimizer_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Flags named after :class:`udacisense.config.TrainConfig` fields; unset ones keep the config's default."""
    defaults = defaults or {}
    parser.add_argument("--epochs", type=int, default=defaults.get("epochs"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=learning_rate, default=defaults.get("lr"), help="peak learning rate, or 'auto' for a short range test first")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--schedule", choices=["cosine", "onecycle"])
    parser.add_argument("--warmup-fraction", type=float, help="one-cycle warm-up share of all steps")
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--grad-clip-norm", type=float, help="clip the gradients' global L2 norm to this value")
    parser.add_argument("--ema-decay", type=float, help="keep, validate and save an exponential moving average of the weights (e.g. 0.999)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step (worth it on a GPU)")
    parser.add_argument("--sync-batchnorm", action="store_true", default=None, help="under torchrun on GPUs: BatchNorm statistics over "
                        "the global batch")


TRAIN_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_fraction", "label_smoothing", "grad_clip_norm",
                "ema_decay", "seed", "device", "compile", "sync_batchnorm")


def learning_rate(text: str) -> float | str:
    """'auto' or a positive number."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number nor 'auto'") from None


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line."""
    return {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name, None) is not None}


def names(text: str) -> tuple[str, ...]:
    """'a,b,,c' -> ('a', 'b', 'c')."""
    return tuple(name for name in text.split(",") if name)


def key_values(items: list[str], flag: str) -> dict[str, Any]:
    """['width_mult=0.75', 'dropout=0'] -> {'width_mult': 0.75, 'dropout': 0} (values read as YAML)."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UdaciSenseError(f"{flag} '{item}' must look like KEY=VALUE, e.g. width_mult=0.75")
        values[key] = parse_yaml(value, f"{flag} '{item}'")  # 0.75 -> float, true -> bool
    return values


def nproc_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, metavar="N", help="train data-parallel in N processes: relaunches this command under "
                        "torchrun (--standalone --nproc_per_node N); gloo on CPU, nccl on CUDA")


def launch_under_torchrun(argv: list[str], processes: int) -> int:
    """This command again, without --nproc, as ``torchrun --standalone --nproc_per_node N -m udacisense.cli ...``, run
    through torchrun's own launcher in this process. A user error is rank 0's one line and exit status; a rank that
    died is one line naming it (torchrun's logs say more)."""
    import logging
    import os
    import signal
    import sys
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    print(f"launching {processes} processes: torchrun --standalone --nproc_per_node {processes} -m udacisense.cli {' '.join(rest)}", flush=True)
    # the cores shared out (torchrun would set 1 and print a banner about it); the agent's own log lines about a failed
    # rank are replaced by the one line below
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ[STATUS_FILE] = str(Path(scratch) / "status")  # where rank 0 leaves the exit status of a user error
        try:
            run(get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(processes), "-m", "udacisense.cli", *rest]))
            return 0
        except ChildFailedError as failure:
            status = Path(os.environ[STATUS_FILE])
            if status.is_file():
                return int(status.read_text())
            rank, process = failure.get_first_failure()
            code = process.exitcode
            cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            print(f"udacisense: error: rank {rank} of {processes} stopped ({cause}) and torchrun ended the others; "
                  "the same command with --resume continues from the last finished epoch or stage", file=sys.stderr)
            return 1
        finally:
            os.environ.pop(STATUS_FILE, None)
