"""udacisense search under failure and in parallel: a search killed mid-trial and resumed (with constraints no trial can
meet), two worker processes sharing one study on a real PostgreSQL server, a trial that raises anything, an artifact
that fails validation, Ctrl-C, an error outside any trial, and a second process on the same run folder. (A separate
file from test_search.py so that pytest-xdist runs the two files side by side.)

The tests of what surrounds a trial replace the runner with a stand-in that returns measurements at once
(``fake_runner`` in this process, tests/fake_trials.py in a process of its own): what they check is the search
loop, its studies and its resume, not training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from conftest import FAST_SEARCH, brute_force_front
from fake_trials import fake_result
from udacisense.cli import main
from udacisense.errors import UdaciSenseError
from udacisense.pipeline.search import Search, search_base
from udacisense.pipeline.search_spec import SearchSpec

COMPLETE, FAIL, WAITING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING


def search_command(tiny_baseline: Path, runs: Path, name: str, trials: int) -> list[str]:
    return ["search", "--checkpoint", str(tiny_baseline), "--budget", "10m", "--trials", str(trials), "--max-drop", "10", "--name", name,
            "--runs-dir", str(runs), *FAST_SEARCH, "--set", "search.space.quantize.method=[static]"]


@pytest.fixture
def fake_runner(monkeypatch) -> list[bool]:
    """The runner replaced by what its result.json would say (tests/fake_trials.py), with an artifact that passed
    validation unless the test appends False to the returned list (one entry per trial, in order)."""
    verdicts: list[bool] = []

    def run_pipeline(pipeline: Any, runs_dir: Path, *, resume: bool, name: str, report: bool) -> dict[str, Any]:
        return fake_result(name, passed=verdicts.pop(0) if verdicts else True)

    monkeypatch.setattr("udacisense.pipeline.search.run_pipeline", run_pipeline)
    return verdicts


def study_of(runs: Path, name: str, fidelity: str = "proxy") -> optuna.Study:
    return optuna.load_study(study_name=f"{name}-{fidelity}", storage=f"sqlite:///{runs / name / 'search' / 'study.db'}")


FAKE_TRIALS = Path(__file__).resolve().parent / "fake_trials.py"


def fake_search(tiny_baseline: Path, log: Path, trial_seconds: float, *argv: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of ``udacisense search`` in a process of its own whose trials are stand-ins
    (tests/fake_trials.py) that take ``trial_seconds`` and are listed in ``log``: the search's studies, storage, lock,
    clock and resume are all real."""
    environment = os.environ | {"UDACISENSE_FAKE_TRIAL_LOG": str(log), "UDACISENSE_FAKE_TRIAL_SECONDS": str(trial_seconds)}
    return [sys.executable, str(FAKE_TRIALS), "search", "--checkpoint", str(tiny_baseline), "--budget", "10m", *argv, *FAST_SEARCH], environment


def test_killed_search_resumes_without_rerunning_finished_trials_and_reports_unmet_constraints(tmp_path, tiny_baseline):
    """SIGKILL during the second trial; --resume keeps the first and reruns the second. No trial can be 1 ns fast: the
    search ends with exit status 1, says so, and still writes the least-violating points."""
    started = tmp_path / "started.log"
    command, environment = fake_search(tiny_baseline, started, 5.0, "--trials", "2", "--max-latency-ms", "0.000001", "--name", "killed",
                          "--runs-dir", str(tmp_path))
    folder = tmp_path / "killed" / "search"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=environment)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if started.is_file() and len(started.read_text().split()) == 2:
            time.sleep(0.5)  # inside the second trial, which takes 5 s
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the search finished before it could be killed"
    spent_before_the_kill = float((folder / ".seconds").read_text())

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=environment)
    assert resumed.returncode == 1, resumed.stderr
    assert "NO TRIAL MET THE CONSTRAINTS" in resumed.stdout + resumed.stderr
    first, second, *again = started.read_text().split()
    assert again == [second] and first != second  # the finished trial was not run again; the interrupted one was
    log = (tmp_path / "killed" / "search.log").read_text()
    assert "was interrupted: queued again" in log
    result = json.loads((folder / "pareto.json").read_text())
    assert not result["feasible_found"] and result["front"] and result["trial_count"] == 2
    assert result["elapsed_seconds"] > spent_before_the_kill > 0  # the budget's clock went on from the killed run's time
    complete = study_of(tmp_path, "killed").get_trials(states=(COMPLETE,))  # no configuration measured twice:
    assert len(complete) == 2 == len({json.dumps(trial.params, sort_keys=True) for trial in complete})
    assert all(Path(point["recipe"]).is_file() for point in result["front"])


def test_two_workers_on_one_postgresql_study_share_trials_without_duplicates(tmp_path, tiny_baseline, postgres_url):
    """Two worker processes on one study in a real PostgreSQL server: each trial is run by one worker, and each worker's
    pareto.json holds the front of all trials (the union of both workers' work)."""
    command, environment = fake_search(tiny_baseline, tmp_path / "started.log", 1.0, "--trials", "4", "--max-drop", "10", "--storage", postgres_url,
                          "--name", "shared")
    workers = [subprocess.Popen(command + ["--runs-dir", str(tmp_path / f"worker{index}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=environment) for index in (0, 1)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
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
    assert {point["trial"] for point in last["front"]} == brute_force_front([point for point in last["trials"] if point["drop"] <= 10])


def test_any_exception_inside_a_trial_fails_that_trial_alone(tmp_path, tiny_baseline, monkeypatch):
    """The first trial raises a RuntimeError (a bug, not a user error); the second runs for real. The search goes on,
    ends normally with the front measured on the test split, and the failure is one line with its type in the study,
    pareto.json, report.md and the log (whose file also keeps the traceback)."""
    real_run_trial = Search.run_trial
    calls: list[dict] = []

    def first_one_raises(self: Search, recipe: dict) -> dict:
        calls.append(recipe)
        if len(calls) == 1:
            raise RuntimeError("boom\nin two lines")
        return real_run_trial(self, recipe)

    monkeypatch.setattr(Search, "run_trial", first_one_raises)
    unpruned = ["--set", "search.space.prune_channels=[false]"]  # the real trial: static int8 of the baseline itself, no fine-tune to wait for
    assert main(search_command(tiny_baseline, tmp_path, "flaky", trials=2) + unpruned) == 0
    folder = tmp_path / "flaky" / "search"
    result = json.loads((folder / "pareto.json").read_text())
    assert len(calls) == 2 and result["trial_count"] == 2
    assert [(row["trial"], row["error"]) for row in result["failed"]] == [("p0", "RuntimeError: boom in two lines")]
    assert [point["trial"] for point in result["front"]] == ["p1"] and 10 < result["front"][0]["test_top1"] <= 100
    assert yaml.safe_load(Path(result["front"][0]["recipe"]).read_text())["export"]["min_agreement"] == 90  # FAST_SEARCH's tolerance
    failed = study_of(tmp_path, "flaky").trials[0]
    assert failed.state == FAIL and failed.user_attrs["error"] == "RuntimeError: boom in two lines"
    log = (tmp_path / "flaky" / "search.log").read_text()
    assert "FAILED: RuntimeError: boom in two lines" in log and "Traceback" in log and "1 failed trial" in (folder / "report.md").read_text()


def test_a_trial_slower_than_the_budget_is_stopped_when_the_budget_runs_out(tmp_path, tiny_baseline, monkeypatch):
    """The budget rule expects a trial to take what finished ones took; the first trial here would take ten minutes of a
    5 s budget. It is stopped at the budget's end and fails with that reason, and the search ends with its outputs."""
    monkeypatch.setattr(Search, "run_trial", lambda self, recipe: time.sleep(600))
    command = search_command(tiny_baseline, tmp_path, "slow", trials=3)
    command[command.index("10m")] = "5s"
    started = time.perf_counter()
    assert main(command) == 1  # no point: every trial failed
    assert time.perf_counter() - started < 60
    result = json.loads((tmp_path / "slow" / "search" / "pareto.json").read_text())
    assert [row["trial"] for row in result["failed"]] == ["p0"] and "budget ran out during this trial" in result["failed"][0]["error"]
    assert 5 <= result["elapsed_seconds"] < 15
    log = (tmp_path / "slow" / "search.log").read_text()
    assert "budget ran out during this trial" in log and "EVERY TRIAL FAILED (1)" in log


def test_an_artifact_that_failed_validation_is_a_failed_trial_never_a_point(tmp_path, tiny_baseline, fake_runner):
    fake_runner.append(False)  # the first trial's artifact disagrees with its source
    assert main(search_command(tiny_baseline, tmp_path, "invalid", trials=2)) == 0
    result = json.loads((tmp_path / "invalid" / "search" / "pareto.json").read_text())
    reason = "pte-int8 failed validation: top-1 agreement 92.30% < 98.0%"
    assert [(row["trial"], row["error"]) for row in result["failed"]] == [("p0", reason)]
    assert [point["trial"] for point in result["trials"]] == ["p1"] and [point["trial"] for point in result["front"]] == ["p1"]
    assert [trial.state for trial in study_of(tmp_path, "invalid").trials] == [FAIL, COMPLETE]


def test_ctrl_c_writes_the_final_outputs_exits_130_and_resume_reruns_the_interrupted_trial(tmp_path, tiny_baseline, fake_runner,
                                                                                           monkeypatch, capsys):
    real_run_trial = Search.run_trial
    calls: list[dict] = []

    def interrupted_in_the_second(self: Search, recipe: dict) -> dict:
        calls.append(recipe)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_trial(self, recipe)

    monkeypatch.setattr(Search, "run_trial", interrupted_in_the_second)
    written: list[bool] = []
    real_write_outputs = Search.write_outputs

    def recorded(self: Search, final: bool = False) -> dict:
        written.append(final)
        return real_write_outputs(self, final)

    monkeypatch.setattr(Search, "write_outputs", recorded)
    command = search_command(tiny_baseline, tmp_path, "stopped", trials=2)
    assert main(command) == 130
    assert "interrupted" in capsys.readouterr().err and written == [False, True]  # after the first trial, then the final pass
    folder = tmp_path / "stopped" / "search"
    result = json.loads((folder / "pareto.json").read_text())
    assert result["trial_count"] == 1 and [point["trial"] for point in result["front"]] == ["p0"]
    assert [path.stem for path in (folder / "points").glob("*.yaml")] == [result["front"][0]["key"]]
    assert f"search interrupted: the front so far is in {folder / 'report.md'}" in (tmp_path / "stopped" / "search.log").read_text()
    trials = study_of(tmp_path, "stopped").trials
    assert [trial.state for trial in trials] == [COMPLETE, FAIL, WAITING] and "error" not in trials[1].user_attrs  # not the trial's fault

    # the lock is free again, and --resume runs the interrupted configuration first
    assert main(command + ["--resume"]) == 0
    trials = study_of(tmp_path, "stopped").trials
    assert trials[2].state == COMPLETE and trials[2].params == trials[1].params and calls[2] == calls[1]


def test_an_error_outside_any_trial_ends_the_search_with_its_final_outputs(tmp_path, tiny_baseline, fake_runner, monkeypatch):
    real_next_trial = Search._next_trial
    asked: list[int] = []

    def fails_the_second_time(self: Search) -> tuple:
        asked.append(1)
        if len(asked) == 2:
            raise RuntimeError("a bug between trials")
        return real_next_trial(self)

    monkeypatch.setattr(Search, "_next_trial", fails_the_second_time)
    written: list[bool] = []
    real_write_outputs = Search.write_outputs
    monkeypatch.setattr(Search, "write_outputs", lambda self, final=False: written.append(final) or real_write_outputs(self, final))
    with pytest.raises(RuntimeError, match="a bug between trials"):  # a bug keeps its traceback
        main(search_command(tiny_baseline, tmp_path, "buggy", trials=3))
    assert written == [False, True]
    assert json.loads((tmp_path / "buggy" / "search" / "pareto.json").read_text())["trial_count"] == 1
    log = (tmp_path / "buggy" / "search.log").read_text()
    assert "search stopped by an error outside a trial (RuntimeError: a bug between trials): the front so far is in" in log


def test_one_process_at_a_time_writes_a_search_in_its_own_folder_while_shared_storage_workers_share_it(tmp_path, tiny_baseline):
    pipeline = search_base(None, tiny_baseline)
    first = Search(pipeline, SearchSpec(), tmp_path, "locked")
    with pytest.raises(UdaciSenseError) as second:
        Search(pipeline, SearchSpec(), tmp_path, "locked", resume=True)
    message = str(second.value)
    assert f"run folder {tmp_path / 'locked'} is in use by udacisense process {os.getpid()}" in message and "\n" not in message
    first.close()
    Search(pipeline, SearchSpec(), tmp_path, "locked", resume=True).close()  # free once the first one is done

    shared = SearchSpec(storage=f"sqlite:///{tmp_path / 'shared.db'}")  # as a PostgreSQL URL: workers share the folder on purpose
    workers = [Search(pipeline, shared, tmp_path, "shared") for _ in range(2)]
    assert workers[0].studies["proxy"].study_name == workers[1].studies["proxy"].study_name == "shared-proxy"


def test_a_front_point_that_fails_validation_on_the_test_split_fails_the_command(tmp_path, tiny_baseline, monkeypatch, capsys):
    """A point validated on the validation split in its trial is validated again on the test split at the end; a failure
    there is named in one line, exit status 1, and in the report. (The check's verdict is forced: the wiring is the point.)"""
    import udacisense.deploy.validate as validate

    real_validate = validate.validate_artifact

    def failing_on_test(*args, **kwargs) -> dict:  # the trials' own validation imported the real function long before
        result = real_validate(*args, **kwargs)
        return result | {"passed": False, "failures": ["top-1 agreement 89.00% < 90.0%"]}

    monkeypatch.setattr(validate, "validate_artifact", failing_on_test)
    unpruned = ["--set", "search.space.prune_channels=[false]"]
    assert main(search_command(tiny_baseline, tmp_path, "test_split", trials=1) + unpruned) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("udacisense: VALIDATION FAILED: front point p0: pte-int8 on the test split: top-1 agreement 89.00% < 90.0%")
    assert "VALIDATION FAILED" in (tmp_path / "test_split" / "search" / "report.md").read_text()
