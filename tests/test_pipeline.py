"""Recipes, the runner, resume after a real kill, targets, the report (rendered in headless Chromium) and compare."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import above_chance
from udacisense.checkpoint import load_checkpoint
from udacisense.cli import main
from udacisense.data import get_dataset
from udacisense.errors import UdaciSenseError
from udacisense.pipeline.recipe import load_recipe, validate_recipe
from udacisense.pipeline.runner import run_pipeline

ROOT = Path(__file__).resolve().parent.parent


def tiny_recipe(model_file: Path, data_root: Path, **changes) -> dict:
    """Baseline TinyNet (3 epochs on 4,000 real Fashion-MNIST images) -> 50% channels (+1 epoch, self-distilled) -> static int8;
    the baseline also ships beside the final model as variants."""
    recipe = {
        "name": "tiny",
        "description": "two stages on a tiny user model",
        "threads": 1,
        "data": {"name": "fashion-mnist", "root": str(data_root), "train_subset": 4000, "test_subset": 1000, "val_fraction": 0.05},
        "baseline": {"model": f"{model_file}:TinyNet", "model_kwargs": {"width": 32}, "train": {"epochs": 3, "batch_size": 64, "lr": 0.05}},
        "stages": [
            {"stage": "prune_channels", "id": "prune", "ratio": 0.5, "fine_tune": {"epochs": 1, "batch_size": 64}, "distill": {"teacher": "self"}},
            {"stage": "quantize", "method": "static", "calibration_images": 64},
        ],
        # a 3-epoch TinyNet's static int8 agrees about 97.4% with its fp32 model on these 1,000 images: under the default 98%
        "export": {"formats": ["pte-int8", "onnx", "web"], "latency_runs": 20, "variants": ["baseline"], "min_agreement": 95},
    }
    return recipe | changes


@pytest.fixture(scope="module")
def tiny_model_file(user_model_file_module) -> Path:
    return user_model_file_module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_file, real_fashion_mnist):
    """The two-stage recipe run end to end once; several tests read its results."""
    runs = tmp_path_factory.mktemp("pipeline_runs")
    recipe_path = runs / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe(tiny_model_file, real_fashion_mnist)))
    result = run_pipeline(load_recipe(recipe_path), runs)
    return recipe_path, runs, result


# --- recipe validation ------------------------------------------------------------------------


def _error(raw: dict) -> str:
    with pytest.raises(UdaciSenseError) as caught:
        validate_recipe(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"stages": [{"stage": "prune_channels", "ratoi": 0.5}]}, "unknown key 'ratoi' (did you mean 'ratio'?)"),
        ({"stages": [{"stage": "prune_chanels", "ratio": 0.5}]}, "unknown stage 'prune_chanels' (did you mean 'prune_channels'?)"),
        ({"stagse": []}, "unknown key 'stagse' (did you mean 'stages'?)"),
        ({"stages": [{"stage": "prune_channels", "ratio": 0.5, "fine_tune": {"epochs": "many"}}]}, "'fine_tune.epochs': Input should be a valid integer"),
        ({"stages": [{"stage": "prune_channels", "ratio": 1.5}]}, "'ratio': Input should be less than 1"),
        ({"stages": [{"stage": "distill", "student": "scratch"}]}, "distill needs a teacher"),
        ({"stages": [{"stage": "quantize"}, {"stage": "prune_channels", "ratio": 0.5}]}, "cannot be pruned, trained or quantized again: put quantize last"),
        ({"stages": [{"stage": "prune_channels", "ratio": 0.5}, {"stage": "distill", "teacher": "baseline", "student": "scratch"}]},
         "trains a new student from scratch"),
        ({"stages": [{"stage": "quantize", "method": "dynamic"}]}, "produces 'ptl' (TorchScript-lite); add 'ptl' to export.formats"),
        ({"stages": [{"stage": "quantize", "method": "qat"}]}, "method qat trains with fake quantization"),
        ({"stages": [{"stage": "prune_channels", "ratio": 0.5, "distill": {"teacher": "self"}}]}, "distill teaches during fine-tuning"),
        ({"stages": [{"stage": "prune_channels"}]}, "give exactly one of ratio, budget or layer_ratios"),
        ({"stages": [{"stage": "prune_unstructured", "ratio": 0.3}, {"stage": "prune_unstructured", "ratio": 0.5}]}, "two stages are called"),
        ({"export": {"formats": ["tensorrt"]}}, "unknown export formats ['tensorrt']"),
        ({"baseline": {"checkpoint": "missing/best.pt"}}, "baseline.checkpoint missing/best.pt does not exist"),
        ({"stages": [{"stage": "distill", "teacher": "missing/large.pt"}]}, "stage 1 (distill) teacher missing/large.pt does not exist"),
    ],
)
def test_recipe_mistakes_are_one_line_errors_that_say_what_to_do(change, expected):
    assert expected in _error({"name": "r"} | change)


def test_shipped_recipes_are_valid_and_listed(capsys, tiny_baseline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where no runs/teacher exists
    for name in ("seed", "mobile", "quickstart", "cascade", "teacher"):
        assert main(["check", name]) == 0
    assert main(["check", "student"]) == 2 and "runs/teacher/stages/00_baseline/best.pt does not exist" in capsys.readouterr().err
    assert main(["check", "student", "--set", f"baseline.checkpoint={tiny_baseline}"]) == 0
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("seed", "mobile", "quickstart", "cascade", "teacher", "student", "prune_channels", "quantize", "distill"))


def test_the_teacher_recipe_resumes_after_an_interruption_and_the_student_recipe_learns_from_it(tmp_path, tiny_model_file, real_fashion_mnist,
                                                                                                 monkeypatch, capsys):
    """teacher.yaml for 2 epochs on 2,000 images, interrupted (Ctrl-C) after its first: --resume trains the second epoch
    only, and the run ends at the teacher's checkpoint with nothing exported. student.yaml then takes that checkpoint as
    its baseline, distils a new student from it, and ships the student's QAT int8 file, validated. The models are the
    user's TinyNet at two widths, not ResNet-18 (37 images/s on one thread) and MobileNetV3-Small (35 s to lower its
    int8 file): the recipes' wiring is the point here; test_loud_failures.py runs QAT on a MobileNetV3-Small."""
    from udacisense import train as train_module

    small = ["--runs-dir", str(tmp_path), "--set", "data.train_subset=2000", "--set", "data.val_fraction=0.01", "--set", "data.test_subset=500",
             "--set", "threads=1", "--set", "export.latency_runs=5"]
    tiny = f"{tiny_model_file}:TinyNet"
    teacher = ["run", "teacher", *small, "--set", f"baseline.model={tiny}", "--set", "baseline.model_kwargs={width: 32}",
               "--set", "baseline.train.epochs=2", "--set", "baseline.train.batch_size=64", "--set", "baseline.train.lr=0.05"]
    save = train_module._save_checkpoints

    def interrupted_after_first_epoch(training, result):
        save(training, result)
        if result.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoints", interrupted_after_first_epoch)
    assert main(teacher) == 130
    monkeypatch.setattr(train_module, "_save_checkpoints", save)
    assert main([*teacher, "--resume"]) == 0
    folder = tmp_path / "teacher" / "stages" / "00_baseline"
    last = load_checkpoint(folder / "last.pt")
    assert [row["epoch"] for row in last["history"]] == [1, 2] and "epoch 1/2" not in (folder / "train.log").read_text().split("resuming")[-1]
    assert last["ema"]  # the moving average was kept (and is what best.pt holds)
    assert not (tmp_path / "teacher" / "deploy").exists()  # a teacher ships nothing

    student = ["run", "student", *small, "--set", f"baseline.checkpoint={folder / 'best.pt'}",
               "--set", f"student.student={{model: '{tiny}', model_kwargs: {{width: 16}}}}", "--set", "student.train.epochs=3",
               "--set", "student.train.batch_size=64", "--set", "student.train.lr=0.05", "--set", "int8.fine_tune={epochs: 1, batch_size: 64}",
               # QAT moves the answers of this 45%-accurate student on its many near-ties (85.8% agreement with its fp32 model
               # measured); the trained recipe holds 97.5%
               "--set", "export.min_agreement=80"]
    assert main(student) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "student" / "result.json").read_text())
    distilled, int8 = result["stages"]
    assert distilled["info"]["teacher"] == str(folder / "best.pt") and load_checkpoint(distilled["checkpoint"])["model"]["kwargs"]["width"] == 16
    assert int8["artifacts"].keys() == {"pte-int8"} and result["validation"]["passed"]
    labels = get_dataset(load_recipe(tmp_path / "student" / "recipe.yaml").recipe.data).test.labels
    assert result["deploy"]["artifacts"]["pte-int8"]["validation"]["top1"] > above_chance(labels, 10, 20)


def test_set_overrides_reach_stages_and_sections_and_reject_unknown_names(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "stages": [{"stage": "prune_channels", "id": "prune", "ratio": 0.5}]}))
    pipeline = load_recipe(path, ["prune.ratio=0.25", "baseline.train.epochs=3", "targets.max_accuracy_drop=1", "threads=1"])
    assert pipeline.stages[0].params.ratio == 0.25 and pipeline.recipe.baseline.train.epochs == 3
    assert pipeline.recipe.targets.max_accuracy_drop == 1.0 and pipeline.recipe.threads == 1
    with pytest.raises(UdaciSenseError, match="did you mean 'prune'"):
        load_recipe(path, ["prnue.ratio=0.25"])
    path.write_text("name: r\nstages: [\n")
    with pytest.raises(UdaciSenseError, match="not valid YAML"):
        load_recipe(path)


def test_check_command_exits_2_with_the_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "stages": [{"stage": "quantize"}, {"stage": "prune_unstructured", "ratio": 0.5}]}))
    assert main(["check", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("udacisense: error:") and "put quantize last" in error and error.count("\n") == 1


# --- running ----------------------------------------------------------------------------------


def test_two_stage_recipe_runs_end_to_end_with_real_effects(tiny_run):
    recipe_path, runs, result = tiny_run
    run_dir = runs / "tiny"
    records = [json.loads(line) for line in (run_dir / "stages.jsonl").read_text().splitlines()]
    assert [record["stage"] for record in records] == ["baseline", "prune_channels", "quantize"]
    assert len({record["hash"] for record in records}) == 3
    for record in records[1:]:
        assert load_checkpoint(record["checkpoint"])["compression"]["stage"] == record["stage"]
    baseline, pruned, quantized = (record["metrics"] for record in records)
    # TinyNet learns Fashion-MNIST in three epochs: 62.8% measured on the run's own 1,000 test images, whose chance level is
    # 11.5%; 40 points over it is far beyond luck (p = 1e-6 at 16.6%) and 11 points under the measurement
    dataset = get_dataset(load_recipe(recipe_path).recipe.data)
    assert baseline["test_top1"] > above_chance(dataset.test.labels, dataset.num_classes, 40)
    assert pruned["parameters"] < 0.4 * baseline["parameters"] and pruned["macs"] < 0.4 * baseline["macs"]
    assert quantized["runtime"] == "pte-int8" and quantized["agreement"] >= 95
    artifact = result["deploy"]["artifacts"]["pte-int8"]
    assert artifact["export"]["prebuilt"].endswith("model_int8.pte")  # the quantize stage's artifact ships as built
    assert artifact["export"]["delegated_nodes"] > 0 and "not_delegated_ops" in artifact["export"]  # with what XNNPACK took
    assert artifact["bytes"] < 0.3 * baseline["bytes"] and artifact["validation"]["images"] == 1000
    assert abs(artifact["validation"]["top1"] - quantized["test_top1"]) < 1e-9
    targets = {row["target"]: row for row in result["targets"]}
    assert set(targets) == {"size reduction", "latency reduction", "accuracy drop (pt)"}
    assert targets["size reduction"]["measured"] == pytest.approx(1 - artifact["bytes"] / baseline["bytes"])
    assert json.loads((run_dir / "result.json").read_text())["targets"] == result["targets"]


def test_report_has_every_stage_the_targets_and_plots(tiny_run):
    _, runs, result = tiny_run
    report = (runs / "tiny" / "report.md").read_text()
    for heading in ("## Executive summary", "## Baseline", "## Stages", "## Deployment", "## Model variants", "### The selector on this machine",
                    "## What it means for the product"):
        assert heading in report
    assert "| target | goal | measured | result |" in report
    for row in result["targets"]:
        assert f"| {row['target']} |" in report
    for stage_id in ("baseline", "prune", "quantize"):
        assert re.search(rf"^\| {stage_id} \|", report, flags=re.M)
    assert f"{result['deploy']['artifacts']['pte-int8']['validation']['top1']:.2f}" in report
    page = (runs / "tiny" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "http://" not in page and "https://" not in page
    assert '<a href="deploy/web/index.html">' in page and (runs / "tiny" / "deploy" / "web" / "index.html").is_file()  # the bundle's web page


def test_export_variants_ship_every_listed_model_in_every_format_in_one_verified_bundle(tiny_run, capsys):
    _, runs, result = tiny_run
    folder = runs / "tiny" / "variants"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert result["variants"]["folder"] == str(folder) and set(manifest["models"]) == {"baseline", "quantize"}
    rows = {row["id"]: row for row in manifest["variants"]}
    assert set(rows) == {f"{model}/{kind}" for model in ("baseline", "quantize") for kind in ("pte-int8", "onnx", "web")}
    assert all((folder / model / "web" / "index.html").is_file() for model in ("baseline", "quantize"))  # each model's page
    shipped = result["deploy"]["artifacts"]["pte-int8"]
    assert rows["quantize/pte-int8"]["sha256"] == shipped["sha256"]  # the final model's int8 artifact as its stage built it
    assert rows["baseline/onnx"]["top1"] == pytest.approx(result["baseline"]["metrics"]["test_top1"], abs=0.2)
    assert rows["quantize/onnx"]["bytes"] < 0.5 * rows["baseline/onnx"]["bytes"]  # the pruned fp32 model the int8 one came from
    capsys.readouterr()
    assert main(["verify", str(folder)]) == 0, capsys.readouterr().out


def test_retime_times_the_variants_again_and_keeps_the_bundle_verified(tiny_run, tmp_path, capsys):
    recipe_path, runs, _ = tiny_run
    shutil.copytree(runs / "tiny", tmp_path / "tiny")
    before = json.loads((tmp_path / "tiny" / "variants" / "manifest.json").read_text())
    assert main(["run", str(recipe_path), "--runs-dir", str(tmp_path), "--resume", "--retime"]) == 0
    after = json.loads((tmp_path / "tiny" / "variants" / "manifest.json").read_text())
    old, new = ({row["id"]: row["latency"]["1_thread"]["p50_ms"] for row in manifest["variants"] if row["runs_here"]} for manifest in (before, after))
    assert len(old) == 4  # the web pages run in a browser, not here: nothing to time
    assert old.keys() == new.keys() and old != new and after["created"] == before["created"]  # timed again, not exported again
    model = json.loads((tmp_path / "tiny" / "variants" / "baseline" / "manifest.json").read_text())
    assert model["artifacts"]["onnx"]["latency"]["1_thread"]["p50_ms"] == new["baseline/onnx"]  # each model's manifest agrees
    assert [row["sha256"] for row in after["variants"] if row["id"] == "quantize/pte-int8"] == [row["sha256"] for row in before["variants"]
                                                                                               if row["id"] == "quantize/pte-int8"]
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "tiny" / "variants")]) == 0, capsys.readouterr().out


def test_report_renders_in_headless_chromium_with_its_plots(tiny_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is not installed: run 'make test' (it installs Debian's chromium) or apt-get install -y chromium")
    _, runs, _ = tiny_run
    completed = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000",
         "--dump-dom", (runs / "tiny" / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-500:]
    body = re.search(r"<body[^>]*>", completed.stdout).group(0)
    assert 'data-figures="4"' in body and 'data-figures-rendered="4"' in body, body
    assert "data-errors" not in body, body


def test_resume_reuses_finished_stages_and_strict_fails_on_missed_targets(tiny_run, capsys):
    recipe_path, runs, result = tiny_run
    before = (runs / "tiny" / "stages.jsonl").read_text()
    manifest = (runs / "tiny" / "deploy" / "manifest.json").read_text()
    variants = (runs / "tiny" / "variants" / "manifest.json").read_text()
    code = main(["run", str(recipe_path), "--runs-dir", str(runs), "--resume", "--strict", "--set", "targets.size_reduction=0.999"])
    assert code == 1
    output = capsys.readouterr().out
    assert re.search(r"size reduction\s+≥ 99\.9%\s+\S+\s+FAIL", output)
    assert (runs / "tiny" / "stages.jsonl").read_text() == before  # nothing retrained, re-measured or re-exported
    assert (runs / "tiny" / "deploy" / "manifest.json").read_text() == manifest
    assert (runs / "tiny" / "variants" / "manifest.json").read_text() == variants
    assert main(["run", str(recipe_path), "--runs-dir", str(runs)]) == 2  # an existing run is never silently replaced
    assert "--resume" in capsys.readouterr().err


def test_changed_stage_config_reruns_that_stage_and_later_ones_only(tiny_run, tmp_path):
    recipe_path, runs, _ = tiny_run
    copy = tmp_path / "runs"
    shutil.copytree(runs / "tiny", copy / "tiny")
    first = [json.loads(line) for line in (copy / "tiny" / "stages.jsonl").read_text().splitlines()]
    result = run_pipeline(load_recipe(recipe_path, ["quantize.observer=minmax"]), copy, resume=True)
    second = [json.loads(line) for line in (copy / "tiny" / "stages.jsonl").read_text().splitlines()]
    assert second[:2] == first[:2]  # baseline and pruning reused as they were
    assert second[2]["hash"] != first[2]["hash"] and second[2]["config"]["observer"] == "minmax"
    assert result["stages"][-1]["config"]["observer"] == "minmax"


def test_compare_writes_a_table_and_a_pareto_plot(tiny_run, tmp_path, capsys):
    _, runs, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(runs / "tiny", other)
    assert main(["compare", str(runs / "tiny"), str(other), "--output", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert table.count("| tiny | model_int8.pte |") == 1 and "| other | model_int8.pte |" in table
    assert (tmp_path / "cmp" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]) == 2
    assert main(["compare", str(tmp_path / "missing")]) == 2
