"""Latency and memory of artifacts in their runtimes at batch 1, each measured in a fresh process.

A fresh process per (artifact, thread count) sizes each runtime's thread pool once before anything
runs (ExecuTorch's pool cannot be resized safely after use), keeps one measurement from warming or
fragmenting another, and gives an honest peak-memory figure for loading and running the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

from udacisense.deploy.runtime import RUNTIMES
from udacisense.errors import UdaciSenseError

_PROBE = r"""
import json, sys, time
kind, path, shape, threads, warmup, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), *map(int, sys.argv[4:7])
import torch
torch.set_num_threads(threads)
from udacisense.deploy.runtime import load_runner
from udacisense.profile import summarize_timings
if kind.startswith("pte"):
    # The runtime's bindings import executorch.exir only for a warning class, and running the exporter package's
    # __init__ costs about 4 s per probe. Register the package unexecuted: its modules still load from their files.
    import importlib.util
    sys.modules.setdefault("executorch.exir", importlib.util.module_from_spec(importlib.util.find_spec("executorch.exir")))
    import executorch.runtime, executorch.extension.pybindings.portable_lib
elif kind.startswith("onnx"):
    import onnxruntime
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
try:
    open('/proc/self/clear_refs', 'w').write('5')  # reset the peak mark: imports do not count
    reset = True
except OSError:
    reset = False
baseline = status('VmRSS')
runner = load_runner(kind, path, threads=threads)
example = torch.randn(shape)
timings = []
for index in range(3 + warmup + runs):
    started = time.perf_counter()
    runner.predict(example)
    if index == 2:
        peak = status('VmHWM')
    if index >= 3 + warmup:
        timings.append((time.perf_counter() - started) * 1000)
print(json.dumps({"baseline_rss": baseline, "peak_rss": peak, "reset": reset, "timing": summarize_timings(timings)}))
"""


_CHOSEN_THREAD_COUNTS: ContextVar[tuple[int, ...] | None] = ContextVar("udacisense_latency_threads", default=None)


@contextmanager
def latency_threads(*counts: int) -> Iterator[None]:
    """Time artifacts at these thread counts only, inside the block: a search's objective is the 1-thread latency,
    and each timed thread count costs a fresh process."""
    token = _CHOSEN_THREAD_COUNTS.set(counts)
    try:
        yield
    finally:
        _CHOSEN_THREAD_COUNTS.reset(token)


def thread_counts() -> list[int]:
    """1 thread (what a phone app usually gives one model) and all cores, unless :func:`latency_threads` chose others."""
    chosen = _CHOSEN_THREAD_COUNTS.get()
    if chosen:
        return list(chosen)
    cores = os.cpu_count() or 1
    return [1] if cores == 1 else [1, cores]


def thread_label(threads: int) -> str:
    return f"{threads}_thread" + ("s" if threads > 1 else "")


def run_probe(kind: str, path: Path, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 20, runs: int = 200) -> dict[str, Any]:
    """Load ``path`` as ``kind`` in a fresh process with ``threads`` threads: peak memory and latency."""
    if kind not in RUNTIMES or kind == "eager":
        raise UdaciSenseError(f"cannot benchmark artifact kind '{kind}' in a separate process")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, kind, str(path), json.dumps(list(input_shape)), str(threads), str(warmup), str(runs)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    if result.returncode != 0:
        tail = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise UdaciSenseError(f"benchmark of {kind} {path} failed: {tail[-1][:200] if tail else 'no output'}")
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    memory = {
        "peak_rss_bytes": probe["peak_rss"],
        "model_bytes": probe["peak_rss"] - probe["baseline_rss"],
        "method": "fresh process: VmHWM after loading and 3 batch-1 runs minus VmRSS after importing the runtime"
        + ("" if probe["reset"] else " (peak mark could not be reset; includes imports)"),
    }
    return {"memory": memory, "latency": probe["timing"] | {"threads": threads}}


def bench_artifact(kind: str, path: Path, input_shape: tuple[int, ...], runs: int = 200) -> dict[str, Any]:
    """Latency at 1 thread and at all cores, and peak memory (from the 1-thread process)."""
    results = {threads: run_probe(kind, path, input_shape, threads, runs=runs) for threads in thread_counts()}
    return {
        "latency": {thread_label(threads): result["latency"] for threads, result in results.items()},
        "memory": results[1]["memory"],
    }
