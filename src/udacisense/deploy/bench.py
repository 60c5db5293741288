"""Latency and memory of artifacts in their runtimes at batch 1, each measured in a fresh process.

A fresh process per (artifact, thread count) sizes each runtime's thread pool once before anything
runs (ExecuTorch's pool cannot be resized safely after use), keeps one measurement from warming or
fragmenting another, and gives an honest peak-memory figure for loading and running the model.

The processes are forked from a small server that has imported torch and the runtime loaders but never
run a model: each child starts with no thread pool, no loaded model and no warm cache, as a new
interpreter would, without paying the 2-3 s of importing torch again. (multiprocessing's forkserver
would re-run the caller's main script in every child; a user's script without a ``__main__`` guard
would then start probes recursively.)
"""

from __future__ import annotations

import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

from udacisense.deploy.memory import mapped_bytes, memory_status, reset_peak
from udacisense.deploy.runtime import loadable_kinds
from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS

# The server: it imports what every probe needs once, then forks one child per request. A child's reply goes
# through a pipe; one that dies without replying (the runtime crashed) is reported by its exit status.
_SERVER = r"""
import json, os, sys
from udacisense.deploy.bench import _probe
from udacisense.errors import first_line
for line in sys.stdin:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)  # runtimes log to stdout and stderr; the reply says what matters
        try:
            reply = {"result": _probe(*json.loads(line))}
        except BaseException as error:
            reply = {"error": first_line(error, 200)}
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(reply))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        data = json.dumps({"error": f"the runtime crashed while loading or running it (exit status {os.waitstatus_to_exitcode(status)})"})
    print(data, flush=True)
"""
_server: subprocess.Popen | None = None
_server_log: Any = None
_server_lock = threading.Lock()


def _ask_server(request: list[Any]) -> dict[str, Any]:
    """Send one probe to the server (started on first use, ended with this process) and wait for its reply."""
    global _server, _server_log
    if _server is None or _server.poll() is not None:
        _server_log = tempfile.TemporaryFile(mode="w+")
        _server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=_server_log,
                                   text=True, bufsize=1)
        atexit.register(_server.stdin.close)  # the server ends when its input does
    try:
        _server.stdin.write(json.dumps(request) + "\n")
        reply = _server.stdout.readline()
    except BaseException:  # interrupted between request and reply (Ctrl-C, a deadline): a late reply must not answer the next request
        _server.kill()
        _server.wait()
        _server = None
        raise
    if not reply:
        _server_log.seek(0)
        lines = [line for line in _server_log.read().splitlines() if line.strip()]
        raise UdaciSenseError(f"the benchmark process exited: {lines[-1][:200] if lines else 'no output'}")
    return json.loads(reply)


def _import_runtime(kind: str) -> None:
    """Import the artifact's runtime before the memory baseline, so that its imports do not count as the model's."""
    if kind in FORMATS and FORMATS[kind].runs_here:
        FORMATS[kind].runtime.preload()


def summarize_timings(timings_ms: list[float]) -> dict[str, float]:
    """p50, p90 and mean of a list of millisecond timings."""
    ordered = sorted(timings_ms)
    return {
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "mean_ms": statistics.fmean(ordered),
        "runs": len(ordered),
    }


def _probe(kind: str, path: str, shape: list[int], threads: int, warmup: int, runs: int, golden: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs in the fresh child: load, 3 runs for the peak memory, ``warmup`` untimed runs, ``runs`` timed runs.
    With ``golden`` (inputs, expected outputs, atol), the artifact must first reproduce the outputs, or nothing is timed."""
    import torch

    from udacisense.deploy.runtime import load_runner, run_batches

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    _import_runtime(kind)
    reset = reset_peak()  # what the child inherited and imported does not count
    before = memory_status()
    runner = load_runner(kind, Path(path), threads=threads)
    checked = None
    if golden is not None:
        outputs, expected = run_batches(runner, torch.tensor(golden["inputs"], dtype=torch.float32)), torch.tensor(golden["outputs"])
        drift = (outputs - expected).abs().max().item() if outputs.shape == expected.shape else float("inf")
        checked = {"max_drift": drift, "passed": drift <= golden["atol"]}
        if not checked["passed"]:
            return {"golden": checked}
    example = torch.randn(shape)
    timings = []
    for index in range(3 + warmup + runs):
        started = time.perf_counter()
        runner.predict(example)
        if index == 2:
            after = memory_status()
            # A forked child faults the libraries' code pages in again as it first runs them; they are shared, and
            # not the model's. The model file itself may be mapped: its pages are.
            library_pages = after["RssFile"] - before["RssFile"] - mapped_bytes(path)
        if index >= 3 + warmup:
            timings.append((time.perf_counter() - started) * 1000)
    return {"baseline_rss": before["VmRSS"], "peak_rss": after["VmHWM"], "library_pages": max(0, library_pages), "reset": reset,
            "timing": summarize_timings(timings), "golden": checked}


LATENCY_THREADS_VARIABLE = "UDACISENSE_LATENCY_THREADS"
_CHOSEN_THREAD_COUNTS: ContextVar[tuple[int, ...] | None] = ContextVar("udacisense_latency_threads", default=None)


@contextmanager
def latency_threads(*counts: int) -> Iterator[None]:
    """Time at these thread counts only, inside the block: a search's objective is the 1-thread latency, and each
    timed thread count of an artifact costs a fresh process."""
    token = _CHOSEN_THREAD_COUNTS.set(counts)
    try:
        yield
    finally:
        _CHOSEN_THREAD_COUNTS.reset(token)


def thread_counts() -> list[int]:
    """The thread counts latency is timed at: 1 thread (what a phone app usually gives one model) and all cores, unless
    :func:`latency_threads` chose others, or ``UDACISENSE_LATENCY_THREADS`` (e.g. ``1`` or ``1,4``) does.

    The variable is for machines that other work shares (CI's parallel test workers): there an all-core timing measures
    the neighbours, and PyTorch's OpenMP threads spinning on a busy core made a 3.6 ms model take 728 ms per run."""
    chosen = _CHOSEN_THREAD_COUNTS.get()
    if chosen:
        return list(chosen)
    variable = os.environ.get(LATENCY_THREADS_VARIABLE, "").strip()
    if variable:
        try:
            counts = sorted({int(part) for part in variable.split(",")})
        except ValueError:
            counts = []
        if not counts or counts[0] < 1:
            raise UdaciSenseError(f"{LATENCY_THREADS_VARIABLE}={variable!r}: give thread counts of at least 1, comma-separated (e.g. 1 or 1,4)")
        return counts
    cores = os.cpu_count() or 1
    return [1] if cores == 1 else [1, cores]


def thread_label(threads: int) -> str:
    """The key a latency is stored under: ``1_thread``, ``4_threads``."""
    return f"{threads}_thread" + ("s" if threads > 1 else "")


def run_probe(kind: str, path: Path, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 20, runs: int = 200,
              golden: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ``path`` as ``kind`` in a fresh process with ``threads`` threads: peak memory and latency.

    With ``golden`` (``inputs``, expected ``outputs``, ``atol``) the process first checks that the artifact
    reproduces the outputs: the result then has ``golden`` (``max_drift``, ``passed``), and no timings when it failed."""
    if kind == "eager" or kind not in loadable_kinds():
        raise UdaciSenseError(f"cannot benchmark artifact kind '{kind}' in a separate process")
    with _server_lock:
        reply = _ask_server([kind, str(path), list(input_shape), threads, warmup, runs, golden])
    if "error" in reply:
        raise UdaciSenseError(f"benchmark of {kind} {path} failed: {reply['error']}")
    probe = reply["result"]
    if "timing" not in probe:
        return {"golden": probe["golden"]}
    memory = {
        "peak_rss_bytes": probe["peak_rss"],
        "model_bytes": probe["peak_rss"] - probe["baseline_rss"] - probe["library_pages"],
        "method": "fresh process: VmHWM after loading and 3 batch-1 runs minus VmRSS after importing the runtime, "
        "less the shared libraries' code paged in by those runs"
        + ("" if probe["reset"] else " (peak mark could not be reset; includes imports)"),
    }
    return {"memory": memory, "latency": probe["timing"] | {"threads": threads}} | ({"golden": probe["golden"]} if golden else {})


def bench_artifact(kind: str, path: Path, input_shape: tuple[int, ...], runs: int = 200) -> dict[str, Any]:
    """Latency at 1 thread and at all cores, and peak memory (from the 1-thread process)."""
    results = {threads: run_probe(kind, path, input_shape, threads, runs=runs) for threads in thread_counts()}
    return {
        "latency": {thread_label(threads): result["latency"] for threads, result in results.items()},
        "memory": results[1]["memory"],
    }
