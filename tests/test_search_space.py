"""The search explores whatever is registered: stages declare their own spaces, the first trials spread over the whole
space (the hand recipe's point first), no configuration is drawn twice, and a stage added from outside the package is
drawn and run by a real search."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import FAST_SETTINGS, forget_registrations, import_plugin, import_user_module
from udacisense.checkpoint import load_model
from udacisense.cli import main
from udacisense.errors import UdaciSenseError
from udacisense.models import STUDENT_WIDTHS, STUDENTS, register_model
from udacisense.pipeline.recipe import apply_override, load_recipe
from udacisense.pipeline.search import (
    TrialDraw,
    check_space_names,
    configuration_key,
    draw_pipeline,
    explore,
    initial_design,
    optuna_pick,
    proxy_sampler,
    recipe_stages,
    trial_recipe,
)
from udacisense.pipeline.search_spec import SearchSpec
from udacisense.stages import STAGES

BASE = {"name": "t", "data": {"name": "synthetic"}, "baseline": {"checkpoint": "best.pt"}}


def used(point: dict, stage: str) -> bool:
    return point.get(stage) is True


def test_the_first_trials_spread_over_every_registered_stage_and_are_all_different():
    searched = [name for name, stage in STAGES.items() if stage.params.search_order is not None]
    assert {"prune_channels", "prune_unstructured", "factorize", "quantize"} <= set(searched)
    for seed in range(8):
        points, _ = initial_design(SearchSpec(seed=seed), {})
        assert len(points) == 6 and len({configuration_key(point) for point in points}) == 6
        assert any(used(point, "prune_channels") for point in points[:3]), f"seed {seed}: no pruned configuration among the first three"
        for stage in searched:  # the stage decisions take the first coordinates: each stage is used and left out within six
            assert 0 < sum(used(point, stage) for point in points) < 6, f"seed {seed}: {stage} is used in all or none of the first six"
    designs = [point for seed in range(8) for point in initial_design(SearchSpec(seed=seed), {})[0]]
    for stage in searched:  # every stage is both used and left out, and its own choices vary
        assert 0 < sum(used(point, stage) for point in designs) < len(designs)
    assert {point["quantize.method"] for point in designs if used(point, "quantize")} == {"static", "qat"}
    macs = [point["prune_channels.budget.macs"] for point in designs if used(point, "prune_channels")]
    assert min(macs) < 0.35 and max(macs) > 0.6  # the range [0.15, 0.8] is covered, not one corner of it


def test_the_hand_recipe_is_the_first_point_and_every_draw_is_a_valid_recipe():
    mobile = recipe_stages(load_recipe("mobile"))
    builtin = ["prune_channels", "factorize", "prune_unstructured", "quantize"]  # a plugin another test registered is left out
    points, _ = initial_design(SearchSpec(stages=builtin), mobile)
    assert points[0] == {"prune_channels": True, "prune_channels.budget.macs": 0.3, "prune_channels.budget.params": 0.25,
                         "prune_channels.importance": "l2", "prune_channels.distill": True, "prune_channels.distill.temperature": 4.0,
                         "factorize": False, "prune_unstructured": False, "quantize": True, "quantize.method": "qat",
                         "quantize.distill": True, "quantize.distill.temperature": 4.0}
    spec = SearchSpec(stages=builtin)
    for point in points + explore(spec, 40, set(), 100)[0]:
        stages = draw_pipeline(TrialDraw(spec, "proxy", lambda name, kind, options: point[name]), spec)
        for stage in stages:  # every stage's own validator accepts what its space drew
            STAGES[stage["stage"]].params.model_validate({key: value for key, value in stage.items() if key not in ("stage", "id")})
        recipe = trial_recipe(BASE, stages, spec, "", "proxy")
        assert recipe["export"]["formats"] == (["pte-int8"] if used(point, "quantize") else ["pte"])
        if used(point, "quantize"):
            assert stages[-1]["stage"] == "quantize"  # the artifact-building stage runs last


def test_every_queued_point_and_every_sampler_draw_goes_through_optuna():
    """What the search runs: the design's points queued in a study, then optuna's own TPE draws, each read back through
    optuna's suggest calls into stages that their own validators accept."""
    spec = SearchSpec(seed=3, initial_trials=6)
    mobile = recipe_stages(load_recipe("mobile"))
    points, used_points = initial_design(spec, mobile)
    points += explore(spec, 30, {configuration_key(point) for point in points}, used_points)[0]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=proxy_sampler(spec))
    for point in points:
        study.enqueue_trial(point)
    for number in range(len(points) + 15):
        trial = study.ask()
        stages = draw_pipeline(TrialDraw(spec, "proxy", optuna_pick(trial)), spec)
        if number < len(points):
            assert trial.params == points[number]  # a queued point is run as drawn
        for stage in stages:
            STAGES[stage["stage"]].params.model_validate({key: value for key, value in stage.items() if key not in ("stage", "id")})
        study.tell(trial, [80.0 + number % 7, 1.0 + number % 3, 0.5])
    assert len(study.trials) == len(points) + 15


def test_the_search_options_narrow_the_space_by_name():
    spec = SearchSpec(space={"quantize": [True], "quantize.method": ["static"], "factorize": [False],
                             "prune_channels": {"budget.macs": [0.2, 0.3], "importance": "taylor"}})
    points, _ = explore(spec, 12, set(), 0)
    assert len(points) == 12
    for point in points:  # a fixed value is not a dimension: the trial does not draw it, the pipeline has it
        assert not {"quantize", "quantize.method", "factorize", "prune_channels.importance"} & set(point)
        stages = {stage["stage"]: stage for stage in draw_pipeline(TrialDraw(spec, "proxy", lambda name, kind, options: point[name]), spec)}
        assert stages["quantize"]["method"] == "static" and "factorize" not in stages
        if used(point, "prune_channels"):
            assert 0.2 <= stages["prune_channels"]["budget"]["macs"] <= 0.3 and stages["prune_channels"]["importance"] == "taylor"
    assert any(used(point, "prune_channels") for point in points)

    raw: dict = {"search": {}}
    apply_override(raw, "search.space.quantize.method=[static]")  # under search.space the rest of the key is one name
    assert raw == {"search": {"space": {"quantize.method": ["static"]}}}
    with pytest.raises(UdaciSenseError, match=r"search.space.prune_channels.budget.macs is a range: give \[low, high\]"):
        explore(SearchSpec(space={"prune_channels": [True], "prune_channels.budget.macs": [0.3]}), 1, set(), 0)
    with pytest.raises(UdaciSenseError, match="unknown stage 'prune_chanels' \\(did you mean 'prune_channels'\\?"):
        SearchSpec(space={"prune_chanels.ratio": [0.5]})
    with pytest.raises(UdaciSenseError, match="search.space.quantize.methd is no dimension of the search \\(did you mean 'quantize.method'\\?"):
        check_space_names(SearchSpec(space={"quantize.methd": ["static"]}))
    with pytest.raises(UdaciSenseError, match="search.space.prune_channels.fine_tune.epochs is set by the stage"):
        check_space_names(SearchSpec(space={"prune_channels.fine_tune.epochs": 3}))
    check_space_names(spec)  # every name of the first spec is a dimension
    with pytest.raises(UdaciSenseError, match=r"search.space.quantize.max_drop takes some of \[None, 0.25, 0.5, 1.0\] \(got \[False\]\)"):
        explore(SearchSpec(space={"quantize": [True], "quantize.method": ["static"], "quantize.max_drop": [False]}), 1, set(), 0)


def test_a_stage_registered_from_outside_is_drawn_and_run_by_a_search_and_never_twice(tmp_path, tiny_baseline):
    """The weight-clustering plugin (tests/plugins/) declares its own space; nothing under src/ names it."""
    import_plugin()
    command = ["search", "--checkpoint", str(tiny_baseline), "--budget", "10m", "--trials", "3", "--max-drop", "50", "--name", "plugin",
               "--runs-dir", str(tmp_path), *FAST_SETTINGS, "--set", "search.stages=[weight_clustering]"]
    assert main(command) == 0
    folder = tmp_path / "plugin" / "search"
    study = optuna.load_study(study_name="plugin-proxy", storage=f"sqlite:///{folder / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and len({configuration_key(t.params) for t in done}) == 3  # the space has 4 configurations: no repeat
    clustered = [t for t in done if t.params["weight_clustering"]]
    assert clustered and {t.params["weight_clustering.clusters"] for t in clustered} <= {8, 32, 128}
    for trial in clustered:
        recipe = yaml.safe_load((folder / "trials" / f"{trial.user_attrs['key']}.yaml").read_text())
        assert recipe["stages"] == [{"stage": "weight_clustering", "id": "weight_clustering", "clusters": trial.params["weight_clustering.clusters"]}]
        result = json.loads((folder / "trials" / trial.user_attrs["key"] / "result.json").read_text())
        assert result["stages"][0]["stage"] == "weight_clustering" and result["stages"][0]["info"]["layers"] > 0
    spec = SearchSpec.model_validate(json.loads((folder / "pareto.json").read_text())["spec"])
    design, _ = initial_design(spec, {})
    assert [t.params for t in sorted(done, key=lambda t: t.number)] == design[:3]  # the first trials are the design's points


def test_the_search_draws_students_from_every_registered_phone_sized_model(monkeypatch):
    """A model registered with student=True (a user's included) is one more choice of the distill stage's space, with
    its width drawn only when it takes width_mult; teachers (ResNet-18, MobileNetV3-Large) are never drawn."""
    forget_registrations(monkeypatch, "my_student")
    register_model("my_student", student=True)(lambda num_classes=10, in_channels=1: None)
    spec = SearchSpec(stages=["distill"], space={"distill": [True]})
    points, _ = explore(spec, 24, set(), 0)
    drawn = {point["distill.student.model"] for point in points}
    assert drawn == set(STUDENTS) and {"my_student", "mobilenet_v3_small", "mobilevit_xxs"} <= drawn
    assert not drawn & {"resnet18", "mobilenet_v3_large"}
    for point in points:
        (stage,) = draw_pipeline(TrialDraw(spec, "proxy", lambda name, kind, options: point[name]), spec)
        params = STAGES["distill"].params.model_validate({key: value for key, value in stage.items() if key not in ("stage", "id")})
        assert params.teacher == "baseline" and params.student.model == point["distill.student.model"]
        assert params.train.epochs == 3 * spec.proxy_epochs  # a student trains from scratch: longer than a fine-tune after a cut
        width = params.student.model_kwargs.get("width_mult")
        assert (width in STUDENT_WIDTHS) if STUDENTS[params.student.model] else width is None
        assert params.must_come_first()  # the search places it first (search_order 0)


# A user's own module: a phone-sized architecture (depthwise-separable convolutions) with a width multiplier, registered
# as a student the search may draw.
USER_STUDENT = """
import torch.nn as nn
from udacisense.models import register_model


@register_model("separable_net", student=True, width_mult=True)
class SeparableNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, width_mult=1.0):
        super().__init__()
        width = int(16 * width_mult)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=width), nn.Conv2d(width, 2 * width, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, images):
        return self.classifier(self.features(images))
"""


def test_a_distilled_student_and_the_pruned_baseline_share_one_front(tmp_path, tiny_baseline, monkeypatch):
    """One search over distill and prune_channels from a user's CNN: a trial that trains a new student (a registered
    user architecture at width 0.5, distilled from the baseline) and a trial that prunes the baseline to 80% of its MACs
    both end on the front: the student is the smaller file, the pruned baseline the more accurate one."""
    forget_registrations(monkeypatch, "separable_net")
    module = tmp_path / "my_students.py"
    module.write_text(USER_STUDENT)
    import_user_module(monkeypatch, module)
    narrowed = ["search.space.distill.student.model=[separable_net]", "search.space.distill.student.model_kwargs.width_mult=[0.5]",
                "search.space.prune_channels.budget.macs=0.8", "search.space.prune_channels.budget.params=0.8",
                "search.space.prune_channels.importance=[l2]", "search.space.prune_channels.distill=[false]",
                "search.stages=[distill, prune_channels]", "search.seed=1", "search.promote_every=10",  # seed 1: the design's first two points
                "search.stage_options={prune_channels: {sensitivity_images: 300, sensitivity_ratios: [0.25]}}"]
    command = ["search", "--checkpoint", str(tiny_baseline), "--budget", "10m", "--trials", "2", "--max-drop", "50",
               "--name", "students", "--runs-dir", str(tmp_path), *FAST_SETTINGS, *(item for setting in narrowed for item in ("--set", setting))]
    assert main(command) == 0
    result = json.loads((tmp_path / "students" / "search" / "pareto.json").read_text())
    assert result["failed"] == [] and len(result["trials"]) == 2
    front = {tuple(stage["stage"] for stage in yaml.safe_load(Path(point["recipe"]).read_text())["stages"]): point for point in result["front"]}
    assert set(front) == {("distill",), ("prune_channels",)}
    student, pruned = front[("distill",)], front[("prune_channels",)]
    trial = json.loads((tmp_path / "students" / "search" / "trials" / student["key"] / "result.json").read_text())
    model = load_model(trial["stages"][0]["checkpoint"])[1]["model"]
    assert model == {"name": "separable_net", "kwargs": {"num_classes": 10, "in_channels": 1, "width_mult": 0.5},
                     "source": f"{module.resolve()}:SeparableNet"}  # rebuilt from there by the fresh-process latency probe
    assert student["megabytes"] < pruned["megabytes"] and student["top1"] < pruned["top1"]
