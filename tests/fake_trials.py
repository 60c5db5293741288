"""`udacisense search` with every trial replaced by what its run's result.json would say, at once: for the tests of
the search's own machinery (studies, shared storage, kills and resume), where a real trial would add a minute of
training and lowering and test nothing more. The numbers differ between configurations (they come from the trial's
configuration hash).

    python tests/fake_trials.py search ...

In a process of its own, ``UDACISENSE_FAKE_TRIAL_SECONDS`` makes each trial take that long, and every trial started
appends its configuration hash to the file ``UDACISENSE_FAKE_TRIAL_LOG``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def fake_result(name: str, passed: bool = True) -> dict[str, Any]:
    """The result.json of the trial run ``name`` (its configuration hash); ``passed=False``: its artifact failed validation."""
    score = int(name[:4], 16) / 0xFFFF
    validation = {"top1": 80.0 + 10 * score, "passed": passed, "failures": [] if passed else ["top-1 agreement 92.30% < 98.0%"]}
    artifact = {"validation": validation, "latency": {"1_thread": {"p50_ms": 1.0 + score}}, "bytes": int(1e5 * (2 - score)), "file": "model.pte"}
    return {"deploy": {"artifacts": {"pte-int8": artifact}}, "baseline": {"metrics": {"test_top1": 88.0}}, "machine": {"isa": "test"},
            "stages": []}


def run_pipeline(pipeline: Any, runs_dir: Any, *, resume: bool, name: str, report: bool) -> dict[str, Any]:
    """The runner's signature, as the search calls it."""
    if log := os.environ.get("UDACISENSE_FAKE_TRIAL_LOG"):
        with open(log, "a") as handle:
            handle.write(name + "\n")
    time.sleep(float(os.environ.get("UDACISENSE_FAKE_TRIAL_SECONDS", "0")))
    return fake_result(name)


if __name__ == "__main__":
    import udacisense.pipeline.search as search
    from udacisense.cli import main

    search.run_pipeline = run_pipeline
    sys.exit(main(sys.argv[1:]))
