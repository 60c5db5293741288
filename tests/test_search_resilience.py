"""udacisense search under failure and in parallel: a search killed mid-trial and resumed (with constraints no trial can
meet), and two worker processes sharing one study on a real PostgreSQL server. (A separate file from test_search.py so
that pytest-xdist runs the two files side by side.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from conftest import FAST_SEARCH
from udacisense.pipeline.search import pareto_front


def test_killed_search_resumes_without_rerunning_finished_trials_and_reports_unmet_constraints(tmp_path, tiny_baseline):
    """SIGKILL during the second trial; --resume keeps the first and reruns the second. No trial can be 1 ns fast: the
    search ends with exit status 1, says so, and still writes the least-violating points."""
    command = [sys.executable, "-m", "udacisense.cli", "search", "--checkpoint", str(tiny_baseline), "--budget", "10m", "--trials", "2",
               "--max-latency-ms", "0.000001", "--name", "killed", "--runs-dir", str(tmp_path), *FAST_SEARCH,
               "--set", "search.space.quantization=[static]"]
    folder = tmp_path / "killed" / "search"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(list((folder / "trials").glob("*/result.json"))) == 1 and len(list((folder / "trials").glob("*/stages.jsonl"))) == 2:
            time.sleep(1.0)  # inside the second trial
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the search finished before it could be killed"
    first = next((folder / "trials").glob("*/result.json"))
    first_written = first.stat().st_mtime_ns
    spent_before_the_kill = float((folder / ".seconds").read_text())

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr
    assert "NO TRIAL MET THE CONSTRAINTS" in resumed.stdout + resumed.stderr
    assert first.stat().st_mtime_ns == first_written  # the finished trial was not run again
    log = (tmp_path / "killed" / "search.log").read_text()
    assert "was interrupted: queued again" in log
    result = json.loads((folder / "pareto.json").read_text())
    assert not result["feasible_found"] and result["front"] and result["trial_count"] == 2
    assert result["elapsed_seconds"] > spent_before_the_kill > 0  # the budget's clock went on from the killed run's time
    assert len({point["key"] for point in result["trials"]}) == len(result["trials"])  # no configuration measured twice
    assert all(Path(point["recipe"]).is_file() for point in result["front"])



def test_two_workers_on_one_postgresql_study_share_trials_without_duplicates(tmp_path, tiny_baseline, postgres_url):
    """Two worker processes on one study in a real PostgreSQL server: each trial is run by one worker, and each worker's
    pareto.json holds the front of all trials (the union of both workers' work)."""
    command = [sys.executable, "-m", "udacisense.cli", "search", "--checkpoint", str(tiny_baseline), "--budget", "10m", "--trials", "2",
               "--max-drop", "10", "--storage", postgres_url, "--name", "shared", *FAST_SEARCH, "--set", "search.space.quantization=[static]"]
    workers = [subprocess.Popen(command + ["--runs-dir", str(tmp_path / f"worker{index}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for index in (0, 1)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="shared-proxy", storage=postgres_url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    logs = [(tmp_path / f"worker{index}" / "shared" / "search.log").read_text() for index in (0, 1)]
    ran = [{int(number) for number in re.findall(r"trial p(\d+) \[proxy\].*val top-1", log)} for log in logs]
    assert ran[0] and ran[1], "both workers ran trials"
    assert not ran[0] & ran[1]  # no trial was run by both
    assert ran[0] | ran[1] == {trial.number for trial in complete}
    final = [json.loads((tmp_path / f"worker{index}" / "shared" / "search" / "pareto.json").read_text()) for index in (0, 1)]
    last = max(final, key=lambda result: result["trial_count"])  # the worker that finished last saw every trial
    configurations = {json.dumps(point["params"], sort_keys=True) for point in last["trials"]}  # a promoted one at full fidelity
    assert configurations == {json.dumps(trial.params, sort_keys=True) for trial in complete}
    assert [point["trial"] for point in last["front"]] == [point["trial"] for point in pareto_front([p for p in last["trials"] if p["feasible"]])]
