"""udacisense search: a small real search on Fashion-MNIST with a tiny user model, its outputs and their reproduction, the
promotion rule, and the constraints as optuna's sampler sees them (failure, resume and several workers:
test_search_resilience.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import FAST_SEARCH, brute_force_front
from udacisense.cli import main
from udacisense.pipeline.search import (
    constraint_values,
    next_trial,
    pareto_front,
    promote,
    promotion_candidates,
    promotion_due,
    promotions_done,
    proxy_sampler,
    violation,
)
from udacisense.pipeline.search_spec import SearchSpec


@pytest.fixture(scope="module")
def small_search(tmp_path_factory, tiny_baseline):
    """A search with a 2-minute budget from the tiny baseline (TinyNet, 3 epochs), ended after 3 trials (2 proxy trials
    and the promotion of one) so that the suite does not wait for the budget (the budget rule: test_search_stops...)."""
    runs = tmp_path_factory.mktemp("search")
    code = main(["search", "--checkpoint", str(tiny_baseline), "--budget", "2m", "--trials", "3", "--max-drop", "10", "--name", "small",
                 "--runs-dir", str(runs), *FAST_SEARCH, "--set", "search.space.quantize.method=[static]"])
    return runs, code


def test_search_writes_a_front_whose_points_are_recipes_that_reproduce(small_search, capsys):
    runs, code = small_search
    folder = runs / "small" / "search"
    result = json.loads((folder / "pareto.json").read_text())
    assert code == 0 and result["feasible_found"] and result["failed"] == []
    assert result["trial_count"] == 3 and len(result["front"]) >= 1
    within = [point for point in result["trials"] if point["drop"] <= 10]  # --max-drop 10, the only limit
    assert {point["trial"] for point in result["front"]} == brute_force_front(within)
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
    proxy = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "prune_channels" in t.user_attrs["train_seconds"])
    assert 0 < proxy.user_attrs["train_seconds"]["prune_channels"] < proxy.user_attrs["seconds"]
    assert proxy.user_attrs["epoch_scale"] == {"prune_channels": 2.0}  # --proxy-epochs 1, --full-epochs 2  # what a promotion's estimate scales

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


def finished_trial(number: int, top1: float, latency: float, size: float, drop_violation: float, prune: bool = True,
                   seconds: float = 30.0, size_violation: float = -1.0) -> optuna.trial.FrozenTrial:
    """A finished proxy trial as optuna stores it, with its constraint values (<= 0: met)."""
    distributions = {"prune_channels": optuna.distributions.CategoricalDistribution([True, False])}
    trial = optuna.trial.create_trial(params={"prune_channels": prune}, distributions=distributions, values=[top1, latency, size],
                                      system_attrs={"constraints:drop": drop_violation, "constraints:size": size_violation},
                                      user_attrs={"seconds": seconds, "fine_tunes": prune})
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
    assert [t.number for t in promotion_candidates(done, [{"prune_channels": True}], 3)] == []  # every pruned config has these params here
    assert [t.number for t in promotion_candidates(done[2:4], [], 2)] == [2, 3]  # infeasible ones come last, least violating first
    # over the size limit: no fine-tune can shrink it, however close it is; a proxy short of the accuracy limit can still rise
    too_big = finished_trial(5, 93.0, 0.1, 0.5, -1.0, size_violation=0.01)
    assert [t.number for t in promotion_candidates([too_big, done[3]], [], 2)] == [3]
    points = [{"top1": t.values[0], "latency_ms": t.values[1], "megabytes": t.values[2]} for t in done[:3]]
    assert pareto_front(points) == points[:2]


def test_constraint_values_are_shares_of_their_limits_so_units_do_not_decide_the_ranking():
    spec = SearchSpec(max_drop=1.0, max_latency_ms=100.0, max_size_mb=0.5)
    assert constraint_values({"drop": 2.0, "latency_ms": 150.0, "megabytes": 0.25}, spec) == {"drop": 1.0, "latency": 0.5, "size": -0.5}
    # 10 ms over a 100 ms limit misses by less than 1 pt over a 1 pt limit (a sum of raw misses said the opposite: 10 > 1)
    slow = constraint_values({"drop": 0.0, "latency_ms": 110.0, "megabytes": 0.1}, spec)
    inaccurate = constraint_values({"drop": 2.0, "latency_ms": 50.0, "megabytes": 0.1}, spec)
    assert violation(slow) == pytest.approx(0.1) and violation(inaccurate) == pytest.approx(1.0)
    # no limit: never missed; a limit of 0 pt: a miss is measured against a tenth of a point, and a gain is still met
    lenient = constraint_values({"drop": 0.05, "latency_ms": 1e6, "megabytes": 1e6}, SearchSpec(max_drop=0.0))
    assert lenient == {"drop": pytest.approx(0.5), "latency": 0.0, "size": 0.0}
    assert constraint_values({"drop": -0.2, "latency_ms": 1.0, "megabytes": 1.0}, SearchSpec(max_drop=0.0))["drop"] < 0


def test_the_samplers_model_of_good_is_the_feasible_region():
    """A toy study (no training) with the search's own sampler: every objective improves as x grows, and the measured
    drop grows with x too, so only x <= 0.3 meets --max-drop 3. With the trials' constraint values the later
    suggestions gather at the feasible edge; without them, the same sampler heads for x = 1."""
    spec = SearchSpec(max_drop=3.0, seed=0)

    def suggestions(constrained: bool) -> list[float]:
        study = optuna.create_study(sampler=proxy_sampler(spec), directions=["maximize", "minimize", "minimize"])

        def objective(trial: optuna.Trial) -> tuple[float, float, float]:
            x = trial.suggest_float("x", 0.0, 1.0)
            measured = {"top1": 80 + 10 * x, "latency_ms": 2 - x, "megabytes": 2 - x, "drop": 10 * x}
            if constrained:
                for key, value in constraint_values(measured, spec).items():  # what Search._objective stores
                    trial.set_constraint(key, value)
            return measured["top1"], measured["latency_ms"], measured["megabytes"]

        study.optimize(objective, n_trials=40)
        if constrained:  # what the sampler reads is exactly what was stored (nothing stored twice under other names)
            trial = study.trials[-1]
            x = trial.params["x"]
            assert trial.constraints == constraint_values({"drop": 10 * x, "latency_ms": 2 - x, "megabytes": 2 - x}, spec)
        return [trial.params["x"] for trial in study.trials[20:]]

    constrained, control = suggestions(True), suggestions(False)
    assert statistics.median(constrained) < 0.4 and sum(x <= 0.45 for x in constrained) >= 12
    assert statistics.median(control) > 0.8 and sum(x <= 0.45 for x in control) <= 2


def test_promotions_do_not_need_an_exact_count_and_two_workers_promote_as_often_as_one(tmp_path):
    """Proxy trials fabricated in a SQLite study (no training). Two workers (two storage connections, as two processes
    have) finish trials two at a time, so the count steps over multiples of promote_every (3, 9): they still promote
    once per 3 trials, as one worker checking after every trial does, and never queue a configuration twice."""
    spec = SearchSpec(promote_every=3, promote=1)
    directions = ["maximize", "minimize", "minimize"]
    distributions = {"prune": optuna.distributions.CategoricalDistribution([True, False]),
                     "macs": optuna.distributions.FloatDistribution(0.1, 1.0)}

    def worker(url: str) -> dict[str, optuna.Study]:
        return {fidelity: optuna.create_study(storage=optuna.storages.RDBStorage(url), study_name=f"s-{fidelity}", directions=directions,
                                              load_if_exists=True) for fidelity in ("proxy", "full")}

    def finish_proxy_trial(studies: dict[str, optuna.Study], index: int) -> None:
        studies["proxy"].add_trial(optuna.trial.create_trial(
            params={"prune": True, "macs": 0.1 + index / 20}, distributions=distributions, values=[80.0 + index, 2.0, 1.0],
            system_attrs={"constraints:drop": -1.0, "constraints:latency": 0.0, "constraints:size": 0.0}, user_attrs={"fine_tunes": True}))

    def catch_up(studies: dict[str, optuna.Study]) -> None:  # what Search.run does before each trial
        while promotion_due(studies["proxy"], spec):
            promote(studies, spec)

    alone = worker(f"sqlite:///{tmp_path / 'alone.db'}")
    for index in range(12):
        finish_proxy_trial(alone, index)
        catch_up(alone)
    a, b = worker(f"sqlite:///{tmp_path / 'shared.db'}"), worker(f"sqlite:///{tmp_path / 'shared.db'}")
    for index in range(0, 12, 2):
        finish_proxy_trial(a, index)
        finish_proxy_trial(b, index + 1)
        catch_up(a)
        catch_up(b)
    for studies in (alone, a):
        assert promotions_done(studies["proxy"]) == 4
        queued = [t.user_attrs["proxy_trial"] for t in studies["full"].get_trials()]
        assert len(queued) == 4 == len(set(queued))
    # both workers found the same promotion due before either did it: it is done, and counted, once
    finish_proxy_trial(a, 12)
    finish_proxy_trial(b, 13)
    finish_proxy_trial(a, 14)
    assert promotion_due(a["proxy"], spec) and promotion_due(b["proxy"], spec)
    assert len(promote(a, spec)) == 1 and promote(b, spec) == [] and not promotion_due(b["proxy"], spec)
    assert promotions_done(b["proxy"]) == 5 and len(b["full"].get_trials()) == 5


def test_search_runs_only_trials_whose_expected_time_fits_the_budget_or_the_trial_count():
    """The stopping rule alone: a proxy trial is expected to take the mean of the finished ones; a promoted candidate,
    its own proxy trial's time with the fine-tunes scaled to the full epochs. A candidate that would overrun the budget
    gives way to a proxy trial that fits."""
    spec = SearchSpec(budget="2m", proxy_epochs=1, full_epochs=4)
    proxies = [finished_trial(0, 90.0, 1.0, 1.0, -1.0, seconds=20.0), finished_trial(1, 90.0, 1.0, 1.0, -1.0, seconds=40.0),
               finished_trial(2, 90.0, 1.0, 1.0, -1.0, prune=False, seconds=1.0)]
    proxies[1].user_attrs["train_seconds"] = {"prune": 10.0, "quantize": 5.0}  # 40 s + 3 x 10 s + 1 x 5 s = 75 s at full fidelity
    proxies[1].user_attrs["epoch_scale"] = {"prune": 4.0, "quantize": 2.0}  # what the trial recorded: 1 -> 4 and 1 -> 2 epochs
    candidate = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, user_attrs={"proxy_trial": 1})

    def next_one(elapsed: float, waiting: bool = False, spec: SearchSpec = spec) -> tuple[str | None, str]:
        return next_trial(spec, {"proxy": proxies, "full": []}, candidate if waiting else None, elapsed)

    assert next_one(elapsed=99.0) == ("proxy", "")  # 99 s + a 20.3 s proxy trial fits in 120 s
    assert next_one(elapsed=100.0)[1] == "budget spent (1.7 of 2.0 min; a trial takes about 0.3 min)"
    assert next_one(elapsed=45.0, waiting=True) == ("full", "")
    assert next_one(elapsed=46.0, waiting=True) == ("proxy", "")  # 46 + 75 s would overrun: a proxy trial instead
    assert next_one(elapsed=1.0, spec=SearchSpec(budget="2m", trials=3)) == (None, "3 trials finished (--trials 3)")
