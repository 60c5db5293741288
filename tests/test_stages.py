"""The stage shape: one registry, stages declared once, a new technique added from outside the package,
and a layering that never points up."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import import_plugin
from udacisense.checkpoint import load_model
from udacisense.cli import main
from udacisense.errors import UdaciSenseError
from udacisense.pipeline.recipe import load_recipe, validate_recipe
from udacisense.pipeline.runner import run_pipeline
from udacisense.stages import STAGES, StageOutput, StageParams, register_stage

SRC = Path(__file__).resolve().parent.parent / "src" / "udacisense"


def quick_recipe(name: str, checkpoint: Path, data_root: Path, stages: list[dict]) -> dict:
    return {"name": name, "threads": 1, "data": {"root": str(data_root), "train_subset": 512, "test_subset": 300},
            "baseline": {"checkpoint": str(checkpoint)}, "stages": stages, "export": {"formats": [], "latency_runs": 5}}


# --- registry -------------------------------------------------------------------------------------


def test_a_stage_name_or_parameter_model_registered_twice_is_refused():
    class Twice(StageParams):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register_stage("prune_channels", Twice, lambda params, info: "")(lambda model, params, context: StageOutput(model))
    with pytest.raises(ValueError, match="registered twice"):
        register_stage("twice", STAGES["quantize"].params, lambda params, info: "")(lambda model, params, context: StageOutput(model))
    assert "twice" not in STAGES

    class Ordered(StageParams):  # placed in a drawn pipeline, but with nothing to draw
        search_order = 50

    with pytest.raises(ValueError, match="needs both search_order and a search_space classmethod"):
        register_stage("ordered", Ordered, lambda params, info: "")(lambda model, params, context: StageOutput(model))
    assert "ordered" not in STAGES


def test_every_stage_declares_its_ordering_facts_and_a_one_line_description():
    built = {name: stage.params.model_validate(example).builds_artifact() for name, stage, example in (
        ("quantize", STAGES["quantize"], {}), ("prune_channels", STAGES["prune_channels"], {"ratio": 0.5}))}
    assert built == {"quantize": "pte-int8", "prune_channels": None}
    scratch = STAGES["distill"].params.model_validate({"teacher": "baseline", "student": "scratch"})
    assert "from scratch" in scratch.must_come_first()
    assert STAGES["distill"].params.model_validate({"teacher": "baseline"}).must_come_first() is None
    for stage in STAGES.values():
        assert stage.summary and "\n" not in stage.summary


# --- a new technique from outside the package ------------------------------------------------------


def test_a_stage_from_a_file_in_tests_runs_in_a_recipe_without_editing_any_module(tiny_baseline, real_fashion_mnist, tmp_path):
    plugin = import_plugin()
    recipe = quick_recipe("clustered", tiny_baseline, real_fashion_mnist, [{"stage": "weight_clustering", "id": "cluster", "clusters": 16}])
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["check", str(path)]) == 0
    result = run_pipeline(load_recipe(path), tmp_path)

    record = result["stages"][0]
    assert record["stage"] == "weight_clustering" and record["summary"].startswith("16 shared values in each of")
    model, _ = load_model(record["checkpoint"])
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == record["info"]["layers"] and all(m.weight.unique().numel() <= 16 for m in layers)
    base, clustered = result["baseline"]["metrics"], record["metrics"]
    assert clustered["gzip_bytes"] < 0.75 * base["gzip_bytes"]  # few distinct values compress: the real effect
    assert base["test_top1"] - clustered["test_top1"] < 10  # 16 values per layer keep the model working
    assert "weight_clustering: 16 shared values" in (tmp_path / "clustered" / "report.md").read_text()
    assert plugin.WeightClustering is STAGES["weight_clustering"].params


# --- stages no other test runs in a recipe, and --retime -------------------------------------------


def test_distill_and_factorize_stages_in_one_recipe_then_retime(tiny_baseline, real_fashion_mnist, tmp_path, capsys):
    checkpoint = tiny_baseline
    stages = [
        {"stage": "distill", "teacher": "baseline", "student": "current", "alpha": 0.5, "train": {"epochs": 1, "lr": 0.01, "batch_size": 64}},
        {"stage": "factorize", "param_ratio": 0.75, "layers": ["classifier"], "min_features": 16, "fine_tune": {"epochs": 1, "batch_size": 64},
         "distill": {"teacher": "self"}},
    ]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(quick_recipe("two", checkpoint, real_fashion_mnist, stages)))
    result = run_pipeline(load_recipe(path), tmp_path)
    distilled, factorized = result["stages"]
    assert distilled["info"]["teacher"] == str(checkpoint) and distilled["summary"].startswith("student current, teacher baseline, T=4.0, α=0.5")
    rank = factorized["info"]["factorized"]["classifier"]["rank"]  # Linear(64, 10) -> Linear(64, r), Linear(r, 10)
    assert distilled["metrics"]["parameters"] - factorized["metrics"]["parameters"] == 64 * 10 - rank * (64 + 10)
    assert abs(factorized["metrics"]["test_top1"] - result["baseline"]["metrics"]["test_top1"]) < 15
    model, _ = load_model(factorized["checkpoint"])
    assert sum(p.numel() for p in model.parameters()) == factorized["metrics"]["parameters"]

    before = [json.loads(line) for line in (tmp_path / "two" / "stages.jsonl").read_text().splitlines()]
    assert main(["run", str(path), "--runs-dir", str(tmp_path), "--resume", "--retime"]) == 0
    after = [json.loads(line) for line in (tmp_path / "two" / "stages.jsonl").read_text().splitlines()]
    assert [r["metrics"]["test_top1"] for r in after] == [r["metrics"]["test_top1"] for r in before]  # nothing retrained
    assert [r["hash"] for r in after] == [r["hash"] for r in before]
    assert any(a["metrics"]["latency_ms"] != b["metrics"]["latency_ms"] for a, b in zip(after, before))  # timed again
    assert main(["run", str(path), "--runs-dir", str(tmp_path), "--retime"]) == 2
    assert "add --resume" in capsys.readouterr().err


def test_a_recipe_that_needs_a_missing_teacher_file_names_the_field(tmp_path):
    with pytest.raises(UdaciSenseError, match=r"stage 1 \(prune_channels\) distill.teacher missing.pt does not exist"):
        validate_recipe({"name": "r", "stages": [{"stage": "prune_channels", "ratio": 0.5, "fine_tune": {"epochs": 1},
                                                 "distill": {"teacher": "missing.pt"}}]})


# --- layering ----------------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """udacisense module -> udacisense modules it imports (module level and inside functions alike)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


LAYERS = {  # a module may import its own layer and lower ones, never a higher one; the longest matching prefix decides
    # techniques, formats with their runtimes, validation and timing in a runtime (deploy uses formats: the test below)
    "udacisense.techniques": 2, "udacisense.formats": 2, "udacisense.deploy": 2, "udacisense.profile": 2,
    "udacisense.measure": 3,  # every reported number
    "udacisense.bundle": 4, "udacisense.report": 4, "udacisense.stages": 4,
    "udacisense.pipeline": 5,
    "udacisense.cli": 6, "udacisense.api": 6,  # the two ways in: commands and the Python API
}


def layer(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else 1  # data, models, config, checkpoint, train, evaluate, profile, io, runs


def test_no_import_cycles_and_no_upward_imports():
    graph = import_graph()
    assert len(graph) > 40
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))
    assert upward == []
    # within the layer: a format knows nothing of validation, timing or bundles; they use it
    assert [f"{a} -> {b}" for a, targets in graph.items() for b in targets
            if a.startswith("udacisense.formats") and b.startswith(("udacisense.deploy", "udacisense.bundle"))] == []

    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_walk_from_run_pipeline_reaches_only_lower_layers():
    graph = import_graph()
    reached, frontier = set(), ["udacisense.pipeline.runner"]
    while frontier:
        module = frontier.pop()
        for target in graph[module] - reached:
            reached.add(target)
            frontier.append(target)
    assert not any(module.startswith("udacisense.cli") for module in reached)
    assert "udacisense.stages.quantize" in reached and "udacisense.measure" in reached


def test_no_stage_name_literals_outside_the_stage_files():
    names = "|".join(STAGES)
    pattern = re.compile(rf"""["']({names})["']""")
    generic = [SRC / "checkpoint.py", SRC / "pipeline" / "recipe.py", SRC / "pipeline" / "runner.py", SRC / "measure.py",
               *(SRC / "report").glob("*.py"), *(SRC / "formats").glob("*.py"), *(SRC / "bundle").glob("*.py")]
    found = [f"{path.name}:{number}: {line.strip()}" for path in generic
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_the_compression_commands_flags_and_help_come_from_the_stage_parameters(capsys, monkeypatch):
    """Every parameter of a stage (but nested sections and layer_ratios, which --plan fills) is a flag of its command,
    named as the parameter, with the parameter's own description as help; the fine-tune and teacher flags come from
    their sections' models the same way."""
    from udacisense.cli.fields import _is_section
    from udacisense.stages.registry import FineTuneConfig, TeacherConfig

    monkeypatch.setenv("COLUMNS", "1000")  # one help line per flag: descriptions are found whole
    commands = {"prune": ["prune_channels", "prune_unstructured"], "quantize": ["quantize"], "factorize": ["factorize"], "distill": ["distill"]}
    for command, stages in commands.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = capsys.readouterr().out
        models = [STAGES[stage].params for stage in stages] + ([FineTuneConfig, TeacherConfig] if command != "distill" else [])
        for model in models:
            for field, info in model.model_fields.items():
                if field == "layer_ratios" or _is_section(info.annotation) or (model is FineTuneConfig and field not in ("epochs", "lr")):
                    continue
                assert f"--{field.replace('_', '-')}" in help_text, f"{command}: no flag for {model.__name__}.{field}"
                assert info.description and info.description in help_text, f"{command}: {model.__name__}.{field} has no help of its own"


def test_generated_flags_build_the_stage_a_recipe_would_hold():
    from udacisense.cli import build_parser
    from udacisense.cli.compress import _stage

    args = build_parser().parse_args(["prune", "--checkpoint", "b.pt", "--budget", "macs=0.35,params=0.3", "--protect", "a,b",
                                      "--sensitivity-ratios", "0.5,0.75", "--epochs", "2", "--teacher", "self", "--temperature", "2"])
    assert _stage(args, "prune_channels") == {
        "stage": "prune_channels", "budget": {"macs": 0.35, "params": 0.3}, "protect": ("a", "b"), "sensitivity_ratios": (0.5, 0.75),
        "fine_tune": {"epochs": 2}, "distill": {"temperature": 2.0, "teacher": "self"}}
    args = build_parser().parse_args(["quantize", "--checkpoint", "b.pt", "--no-per-channel", "--method", "qat", "--epochs", "1"])
    assert _stage(args, "quantize") == {"stage": "quantize", "method": "qat", "per_channel": False, "fine_tune": {"epochs": 1, "lr": 0.002}}
    args = build_parser().parse_args(["prune", "--checkpoint", "b.pt", "--method", "unstructured", "--ratio", "0.5", "--scope", "layer"])
    assert _stage(args, "prune_unstructured") == {"stage": "prune_unstructured", "ratio": 0.5, "scope": "layer"}


# --- distillation cascade -------------------------------------------------------------------------


def test_a_distill_stage_learns_from_the_previous_stage_model_in_a_cascade(tmp_path, tiny_baseline, real_fashion_mnist):
    """teacher: previous: the second student is taught by the first (a weak TinyNet of width 4), not by the baseline,
    so it agrees with the first on more test images than with the baseline."""
    user_model = load_model(tiny_baseline)[1]["model"]["name"]  # the baseline's own file: path/to/my_models.py:TinyNet
    first = {"stage": "distill", "id": "assistant", "teacher": "baseline", "student": {"model": user_model, "model_kwargs": {"width": 4}},
             "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "threads": 1}}
    second = {"stage": "distill", "id": "student", "teacher": "previous", "alpha": 1.0, "temperature": 2.0,
              "student": {"model": user_model, "model_kwargs": {"width": 16}}, "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "threads": 1}}
    recipe = quick_recipe("cascade", tiny_baseline, real_fashion_mnist, [first, second])
    recipe["data"] |= {"train_subset": 2000, "val_fraction": 0.05}
    with pytest.raises(UdaciSenseError, match="stage 2 \\(distill\\) trains a new student from scratch .*'teacher: previous' to learn from it"):
        validate_recipe({**recipe, "stages": [first, {**second, "teacher": "baseline"}]})
    result = run_pipeline(validate_recipe(recipe), tmp_path)
    assistant, student = result["stages"]
    assert student["info"]["teacher"] == "previous" and assistant["info"]["teacher"] == str(tiny_baseline)

    def predictions(checkpoint) -> torch.Tensor:
        from udacisense.data import dataset_for_contract

        model, payload = load_model(checkpoint)
        dataset = dataset_for_contract(payload["input"], root=real_fashion_mnist, test_subset=1000)
        with torch.no_grad():
            return model.eval()(dataset.normalization.apply(dataset.test.images)).argmax(1)

    taught, by_assistant, by_baseline = predictions(student["checkpoint"]), predictions(assistant["checkpoint"]), predictions(tiny_baseline)
    with_assistant, with_baseline = (taught == by_assistant).float().mean().item(), (taught == by_baseline).float().mean().item()
    assert with_assistant > with_baseline + 0.2  # measured: 66% against 23% (the assistant and the baseline agree on 31%)
