"""udacisense search: a small real search on Fashion-MNIST with a tiny user model, its outputs and their reproduction, and
the promotion rule (failure, resume and several workers: test_search_resilience.py)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import FAST_SEARCH
from udacisense.cli import main
from udacisense.pipeline.search import next_trial, pareto_front, promotion_candidates, size_feasible_space
from udacisense.pipeline.search_spec import SearchSpace, SearchSpec


@pytest.fixture(scope="module")
def small_search(tmp_path_factory, tiny_baseline):
    """A search with a 2-minute budget from the tiny baseline (TinyNet, 3 epochs), ended after 3 trials (2 proxy trials
    and the promotion of one) so that the suite does not wait for the budget (the budget rule: test_search_stops...)."""
    runs = tmp_path_factory.mktemp("search")
    code = main(["search", "--checkpoint", str(tiny_baseline), "--budget", "2m", "--trials", "3", "--max-drop", "10", "--name", "small",
                 "--runs-dir", str(runs), *FAST_SEARCH, "--set", "search.space.quantization=[static]"])
    return runs, code


def test_search_writes_a_front_whose_points_are_recipes_that_reproduce(small_search, capsys):
    runs, code = small_search
    folder = runs / "small" / "search"
    result = json.loads((folder / "pareto.json").read_text())
    assert code == 0 and result["feasible_found"]
    assert result["trial_count"] == 3 and len(result["front"]) >= 1
    assert [point["fidelity"] for point in result["trials"]].count("full") == 1  # the promoted proxy trial replaced by its rerun
    for point in result["front"]:
        assert point["drop"] <= 10 and 0 < point["megabytes"] and 0 < point["latency_ms"]
        assert 10 < point["test_top1"] <= 100  # the front alone is measured on the test split, at the end
        assert Path(point["recipe"]).is_file() and point["recipe"].startswith(str(folder / "points"))
    assert {path.name for path in (folder / "points").glob("*.yaml")} == {f"{point['key']}.yaml" for point in result["front"]}
    assert all((folder / f"best_{objective}.yaml").is_file() for objective in ("accuracy", "latency", "size"))
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG" and "Pareto front" in (folder / "report.md").read_text()
    trial = json.loads((folder / "trials" / result["front"][0]["key"] / "result.json").read_text())
    assert list(trial["deploy"]["artifacts"]["pte-int8"]["latency"]) == ["1_thread"]  # the objective alone: one fresh process
    study = optuna.load_study(study_name="small-proxy", storage=f"sqlite:///{folder / 'study.db'}")
    proxy = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.params["prune"])
    assert 0 < proxy.user_attrs["train_seconds"]["prune"] < proxy.user_attrs["seconds"]  # what a promotion's estimate scales

    # a point's recipe reproduces its validation top-1 with 'udacisense run' (run on the validation split to compare)
    point = result["front"][0]
    recipe = yaml.safe_load(Path(point["recipe"]).read_text())
    assert recipe["data"]["evaluate_on"] == "test" and Path(recipe["baseline"]["checkpoint"]).is_absolute()
    assert main(["run", point["recipe"], "--runs-dir", str(runs), "--name", "again", "--set", "data.evaluate_on=val"]) == 0
    again = json.loads((runs / "again" / "result.json").read_text())
    assert again["deploy"]["artifacts"]["pte-int8"]["validation"]["top1"] == pytest.approx(point["top1"], abs=1e-9)

    capsys.readouterr()
    assert main(["search", "--show", "small", "--runs-dir", str(runs)]) == 0
    assert point["summary"] in capsys.readouterr().out


def test_a_size_limit_leaves_out_only_configurations_that_cannot_fit(small_search, tiny_baseline):
    """The space narrows to parameter shares whose int8 weights fit in the limit; the bound holds for every real trial:
    with its own measured size as the limit, the share it kept is still inside the range."""
    from udacisense.checkpoint import load_model

    model = load_model(tiny_baseline)[0]
    total = sum(parameter.numel() for parameter in model.parameters())
    space, note = size_feasible_space(SearchSpace(), 0.3 * total / 1e6, model)
    assert space.prune == (True,) and space.params[0] == 0.1 and 0.3 < space.params[1] < 0.35 and "always prunes" in note
    assert size_feasible_space(SearchSpace(), 4 * total / 1e6, model) == (SearchSpace(), "")  # an fp32 copy fits: nothing to leave out
    assert size_feasible_space(SearchSpace(), 0.05 * total / 1e6, model)[0].params[0] < 0.1  # below the range: a range below the bound

    runs, _ = small_search
    trials = [json.loads(path.read_text()) for path in (runs / "small" / "search" / "trials").glob("*/result.json")]
    assert trials
    for trial in trials:
        kept = next(stage["info"]["parameters"]["after"] for stage in trial["stages"] if stage["id"] == "prune") / total
        limit = trial["deploy"]["artifacts"]["pte-int8"]["bytes"] / 1e6
        assert kept <= size_feasible_space(SearchSpace(), limit, model)[0].params[1]


def finished_trial(number: int, top1: float, latency: float, size: float, drop_violation: float, prune: bool = True,
                   seconds: float = 30.0, size_violation: float = -1.0) -> optuna.trial.FrozenTrial:
    """A finished proxy trial as optuna stores it, with its constraint values (<= 0: met)."""
    distributions = {"prune": optuna.distributions.CategoricalDistribution([True, False])}
    trial = optuna.trial.create_trial(params={"prune": prune}, distributions=distributions, values=[top1, latency, size],
                                      system_attrs={"constraints:drop": drop_violation, "constraints:size": size_violation},
                                      user_attrs={"seconds": seconds})
    trial.number = number
    return trial


def test_promotion_takes_the_feasible_front_first_and_never_twice():
    done = [
        finished_trial(0, 90.0, 1.0, 1.0, -0.5),   # feasible, on the front (most accurate)
        finished_trial(1, 85.0, 0.5, 0.5, -0.1),   # feasible, on the front (fastest and smallest)
        finished_trial(2, 84.0, 0.6, 0.6, -0.2),   # feasible, dominated by 1
        finished_trial(3, 95.0, 0.1, 0.1, 2.0),    # best numbers, but misses the accuracy-drop constraint
        finished_trial(4, 91.0, 2.0, 2.0, -1.0, prune=False),  # on the front, but no fine-tune: already at full fidelity
    ]
    assert [t.number for t in promotion_candidates(done, [], 3)] == [0, 1, 2]
    assert [t.number for t in promotion_candidates(done, [{"prune": True}], 3)] == []  # every pruned config has these params here
    assert [t.number for t in promotion_candidates(done[2:4], [], 2)] == [2, 3]  # infeasible ones come last, least violating first
    # over the size limit: no fine-tune can shrink it, however close it is; a proxy short of the accuracy limit can still rise
    too_big = finished_trial(5, 93.0, 0.1, 0.5, -1.0, size_violation=0.01)
    assert [t.number for t in promotion_candidates([too_big, done[3]], [], 2)] == [3]
    points = [{"top1": t.values[0], "latency_ms": t.values[1], "megabytes": t.values[2]} for t in done[:3]]
    assert pareto_front(points) == points[:2]


def test_search_runs_only_trials_whose_expected_time_fits_the_budget_or_the_trial_count():
    """The stopping rule alone: a proxy trial is expected to take the mean of the finished ones; a promoted candidate,
    its own proxy trial's time with the fine-tunes scaled to the full epochs. A candidate that would overrun the budget
    gives way to a proxy trial that fits."""
    spec = SearchSpec(budget="2m", proxy_epochs=1, full_epochs=4, qat_epochs=(1, 2))
    proxies = [finished_trial(0, 90.0, 1.0, 1.0, -1.0, seconds=20.0), finished_trial(1, 90.0, 1.0, 1.0, -1.0, seconds=40.0),
               finished_trial(2, 90.0, 1.0, 1.0, -1.0, prune=False, seconds=1.0)]
    proxies[1].user_attrs["train_seconds"] = {"prune": 10.0, "quantize": 5.0}  # 40 s + 3 x 10 s + 1 x 5 s = 75 s at full fidelity
    candidate = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, user_attrs={"proxy_trial": 1})

    def next_one(elapsed: float, waiting: bool = False, spec: SearchSpec = spec) -> tuple[str | None, str]:
        return next_trial(spec, {"proxy": proxies, "full": []}, candidate if waiting else None, elapsed)

    assert next_one(elapsed=99.0) == ("proxy", "")  # 99 s + a 20.3 s proxy trial fits in 120 s
    assert next_one(elapsed=100.0)[1] == "budget spent (1.7 of 2.0 min; a trial takes about 0.3 min)"
    assert next_one(elapsed=45.0, waiting=True) == ("full", "")
    assert next_one(elapsed=46.0, waiting=True) == ("proxy", "")  # 46 + 75 s would overrun: a proxy trial instead
    assert next_one(elapsed=1.0, spec=SearchSpec(budget="2m", trials=3)) == (None, "3 trials finished (--trials 3)")
