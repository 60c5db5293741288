"""Random-kill fault injection, shared by tests/test_faults.py (a few kills) and benchmarks/kills.py (20 or more).

A command is started, SIGKILLed (its whole process group) at a random moment, started again with --resume, and so on;
then it is resumed to the end. What it leaves must equal an uninterrupted run's, apart from what is measured rather
than computed (timings, memory, the machine) and the run folder's own path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

# Not bit-exact by nature: timings and the environment are measured; a .pt file's sha256 changes with every save
# (torch.save writes a random serialization id into the archive), so checkpoints are compared by their tensors.
NOT_BIT_EXACT = {"seconds", "wall_seconds", "images_per_second", "latency_ms", "eager_latency", "latency", "memory", "export_seconds", "created", "machine",
                 "seconds_this_invocation", "versions", "checkpoint_sha256"}


def kill_and_resume(command: list[str], kills: int, seed: int, span: tuple[float, float], journal: Path,
                    after_lines: list[int] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run ``command`` and SIGKILL it (its process group) ``kills`` times, each restart adding ``--resume``, then let
    the last start finish. Each kill comes a random ``span`` of seconds after the start or, with ``after_lines``, after
    ``journal`` has reached that many lines (a finished step) in that start. Returns how many starts were killed, how
    many ended first, and the journal's text at each kill (what a resume must keep, not recompute)."""
    rng = random.Random(seed)
    killed = finished_first = 0
    kept: list[str] = []
    for attempt in range(kills + 1):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        if attempt < kills:
            delay, armed_at = rng.uniform(*span), None if after_lines and after_lines[attempt] else time.perf_counter()
            while process.poll() is None:
                if armed_at is None and journal.is_file() and journal.read_text().count("\n") >= after_lines[attempt]:
                    armed_at = time.perf_counter()
                if armed_at is not None and time.perf_counter() - armed_at >= delay:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    break
                time.sleep(0.02)
            if process.returncode == -signal.SIGKILL:
                killed += 1
                kept.append(journal.read_text() if journal.is_file() else "")
                continue
            finished_first += 1
        else:
            process.wait(timeout=timeout)
        if process.returncode != 0:
            raise AssertionError(f"start {attempt} exited {process.returncode}: {process.stderr.read()[-2000:]}")
    return {"killed": killed, "finished_before_its_kill": finished_first, "journal_at_kills": kept}


def computed(run_dir: Path) -> dict[str, Any]:
    """Everything a finished run computed: its journal and result without measured fields, the sha256 of every
    checkpoint's tensors (bit-exact weights) and of every bundle file."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in NOT_BIT_EXACT}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value.replace(str(run_dir), "<run>") if isinstance(value, str) else value

    journal = [strip(json.loads(line)) for line in (run_dir / "stages.jsonl").read_text().splitlines()]
    result = strip(json.loads((run_dir / "result.json").read_text()))
    result["targets"] = [row for row in result["targets"] if "latency" not in row["target"]]  # judged on a measured latency
    weights = {}
    for path in sorted(run_dir.rglob("*.pt")):
        if path.name in ("model.pt", "best.pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            digest = hashlib.sha256()
            for key in sorted(state):
                digest.update(key.encode() + state[key].contiguous().numpy().tobytes())
            weights[str(path.relative_to(run_dir))] = digest.hexdigest()
    manifest = json.loads((run_dir / "deploy" / "manifest.json").read_text()) if (run_dir / "deploy" / "manifest.json").is_file() else {}
    return {"journal": journal, "result": result, "weights": weights, "bundle_files": manifest.get("files", {})}


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two computed() records first differ (for the assertion message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((found for i, (x, y) in enumerate(zip(a, b)) if (found := first_difference(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where}: {str(a)[:120]} != {str(b)[:120]}"


def timed(command: list[str]) -> float:
    """An uninterrupted run of ``command``; returns its wall time (the span random kills are drawn from)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started
