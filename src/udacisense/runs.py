"""Run folders: ``runs/<name>/`` with the resolved config, a log file and results."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import yaml

from udacisense.errors import UdaciSenseError
from udacisense.io import atomic_write

FILE_ONLY = {"file_only": True}
RESULT = "result.json"  # every number of a finished pipeline run (read by reports and compare)
CLOCK = ".seconds"  # a job's work time so far, beside its work (see WorkClock)


@contextlib.contextmanager
def removed_if_refused(run_dir: Path, results: str) -> Iterator[None]:
    """Remove ``run_dir``, created by this job, when a mistake in its input (exit status 2) stops it before ``results``
    (a file in it) holds anything: the corrected command must not be refused for a folder that holds nothing."""
    fresh = not run_dir.exists() or not any(run_dir.iterdir())
    try:
        yield
    except UdaciSenseError as error:
        written = run_dir / results
        if fresh and error.exit_status == 2 and not (written.is_file() and written.stat().st_size):
            close_logger(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def prepare_run_dir(runs_dir: Path, name: str, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create ``runs_dir/name``; refuse to clobber an earlier run unless told to resume or overwrite."""
    run_dir = Path(runs_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise UdaciSenseError(
                f"run folder {run_dir} already holds results; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --name"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """One writer per run folder: an OS lock on ``.<name>.lock`` beside the folder (beside it, so that --overwrite can
    delete the folder), held for the block and released by the OS if the process dies. A second writer fails at once."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UdaciSenseError(f"run folder {run_dir} is in use by {holder}; wait for it to finish or choose another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"udacisense process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class WorkClock:
    """Seconds of work on the job in a folder, over every invocation that worked on it: ``<folder>/.seconds`` holds
    the time so far, so a job killed and resumed, or split across sessions, reports what it cost in all (its lost
    work included), not only its last invocation. The clock runs inside ``with``, where it is saved every
    ``tick_seconds`` (a kill loses at most that) and at the end; calling it reads it."""

    def __init__(self, folder: Path, tick_seconds: float = 30.0) -> None:
        self.path = Path(folder) / CLOCK
        self.tick_seconds = tick_seconds
        self.before = float(self.path.read_text()) if self.path.is_file() else 0.0
        self.started: float | None = None
        self._stopped = threading.Event()

    def __call__(self) -> float:
        return self.before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def save(self) -> None:
        with contextlib.suppress(OSError, UdaciSenseError):  # a full disk fails the job itself, not its bookkeeping
            atomic_write(self.path, lambda handle: handle.write(f"{self():.3f}".encode()))

    def __enter__(self) -> "WorkClock":
        self.started = time.perf_counter()
        self._stopped.clear()
        self._ticker = threading.Thread(target=self._tick, name=f"work clock {self.path}", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._ticker.join()
        self.save()
        self.before, self.started = self(), None

    def _tick(self) -> None:
        while not self._stopped.wait(self.tick_seconds):
            self.save()


def save_config(run_dir: Path, config: dict) -> Path:
    """Write the resolved config as YAML so a run can be reproduced exactly."""
    text = yaml.safe_dump(config, sort_keys=False)
    return atomic_write(run_dir / "config.yaml", lambda handle: handle.write(text.encode()))


def get_logger(run_dir: Path, name: str = "udacisense") -> logging.Logger:
    """A logger writing to ``run_dir/<name>.log`` and to the console, configured once per folder. A record logged
    with ``extra=FILE_ONLY`` stays out of the console (an error the command line prints itself)."""
    logger = logging.getLogger(f"udacisense.run.{run_dir.resolve()}")
    if not logger.handlers:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        file_handler = logging.FileHandler(run_dir / f"{name}.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        logger.addHandler(file_handler)
        logger.addHandler(console)
    return logger


def close_logger(run_dir: Path) -> None:
    """Close the log files :func:`get_logger` opened in ``run_dir`` (before the folder is removed)."""
    logger = logging.getLogger(f"udacisense.run.{run_dir.resolve()}")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
