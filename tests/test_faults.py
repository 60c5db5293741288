"""Random-kill fault injection: a small pipeline SIGKILLed at random moments and resumed each time ends with the same
journal, metrics, weights and bundle files as an uninterrupted run (benchmarks/kills.py does 20 kills)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import write_user_model_file
from faults import computed, first_difference, kill_and_resume, timed
from udacisense.runs import CLOCK, WorkClock


def small_pipeline(folder: Path) -> Path:
    """Synthetic data, a user's TinyNet trained as the baseline, channel pruning and sparsity (each fine-tuned), ONNX."""
    recipe = {
        "name": "faults", "threads": 1,
        "data": {"name": "synthetic", "val_fraction": 0.2},
        "baseline": {"model": f"{write_user_model_file(folder)}:TinyNet", "model_kwargs": {"width": 16},
                     "train": {"epochs": 4, "batch_size": 16, "lr": 0.05}},
        "stages": [
            {"stage": "prune_channels", "id": "prune", "ratio": 0.5, "fine_tune": {"epochs": 3, "batch_size": 16}},
            {"stage": "prune_unstructured", "id": "sparsify", "ratio": 0.5, "fine_tune": {"epochs": 2, "batch_size": 16}},
        ],
        "export": {"formats": ["onnx"], "latency_runs": 5},
        "targets": {"max_accuracy_drop": 100},
    }
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def command(recipe: Path, runs: Path) -> list[str]:
    return [sys.executable, "-m", "udacisense.cli", "run", str(recipe), "--runs-dir", str(runs)]


def test_random_kills_then_resume_leave_exactly_what_an_uninterrupted_run_leaves(tmp_path):
    recipe = small_pipeline(tmp_path)
    timed(command(recipe, tmp_path / "reference"))
    journal = tmp_path / "killed" / "faults" / "stages.jsonl"
    # one kill in each step after the baseline (stage 1, stage 2, the export), each a random moment early in the step:
    # within half the shorter stage of the reference run (about 1 s here), so that no stage ends before its kill even
    # when the killed run is faster (the export takes longer: it starts a probe process); benchmarks/kills.py adds kills in training and start-up
    stages = (tmp_path / "reference" / "faults" / "stages.jsonl").read_text().splitlines()[1:]
    span = (0.0, min(1.0, 0.5 * min(json.loads(line)["seconds"] for line in stages)))
    outcome = kill_and_resume(command(recipe, tmp_path / "killed"), kills=3, seed=0, span=span, journal=journal, after_lines=[1, 2, 3])
    assert outcome["killed"] == 3, outcome
    final = journal.read_text()
    assert [kept.count("\n") for kept in outcome["journal_at_kills"]] == [1, 2, 3]
    assert all(final.startswith(kept) for kept in outcome["journal_at_kills"])  # finished steps were reused, timings and all
    killed, reference = computed(tmp_path / "killed" / "faults"), computed(tmp_path / "reference" / "faults")
    assert len(killed["journal"]) == 3 and len(killed["weights"]) >= 3 and killed["bundle_files"]
    assert killed == reference, first_difference(killed, reference)


def test_the_work_clock_of_a_killed_job_goes_on_from_its_last_tick_when_resumed(tmp_path):
    """A job split by a SIGKILL reports the time of both invocations (up to the killed one's last tick), not the last alone."""
    worker = subprocess.Popen([sys.executable, "-c", "import sys, time; from udacisense.runs import WorkClock\n"
                               "with WorkClock(sys.argv[1], tick_seconds=0.1):\n    time.sleep(60)", str(tmp_path)])
    deadline = time.time() + 60
    while not (tmp_path / CLOCK).is_file() or float((tmp_path / CLOCK).read_text()) < 1.0:
        assert time.time() < deadline and worker.poll() is None, "the clock never ticked past 1 s"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = float((tmp_path / CLOCK).read_text())
    with WorkClock(tmp_path) as seconds:
        assert killed <= seconds() < killed + 1.0
        time.sleep(0.2)
    assert float((tmp_path / CLOCK).read_text()) >= killed + 0.2
