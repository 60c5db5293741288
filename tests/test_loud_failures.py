"""Failures are loud: a quantized file that disagrees with its source, a shipped artifact that fails validation, a stage
whose model falls to chance and a model whose eval mode collapsed each end the command with one line and exit status 1."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from conftest import above_chance
from udacisense.cli import main
from udacisense.data import get_dataset
from udacisense.data.strokes import write_stroke_digits
from udacisense.pipeline.recipe import load_recipe

QUICK = ["--test-subset", "500", "--runs", "5", "--threads", "1"]


def last_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err.strip().splitlines()[-1]


def test_a_broken_int8_conversion_fails_the_quantize_command_without_formats(tiny_baseline, real_fashion_mnist, tmp_path, capsys, monkeypatch):
    """A conversion that ships another function (here: the int8 graph of an untrained copy) is caught by the stage's own
    agreement check, with no --formats and no --strict."""
    import udacisense.techniques.quantize as quantize

    convert = quantize.quantize_pt2e_static

    def convert_another_model(model, *args, **kwargs):
        other = copy.deepcopy(model)
        torch.manual_seed(0)
        with torch.no_grad():
            for weight in (module.weight for module in other.modules() if isinstance(module, (nn.Conv2d, nn.Linear))):
                weight.mul_(1 + 0.3 * torch.randn_like(weight))  # a file that still classifies, but not as its model does
        return convert(other, *args, **kwargs)

    monkeypatch.setattr(quantize, "quantize_pt2e_static", convert_another_model)
    code = main(["quantize", "--checkpoint", str(tiny_baseline), "--method", "static", "--calibration-images", "32",
                 "--data-root", str(real_fashion_mnist), *QUICK, "--runs-dir", str(tmp_path), "--name", "broken"])
    _, err = last_line(capsys)
    assert code == 1
    assert err.startswith("udacisense: COMPRESSION FAILED: stage 1 (quantize): model_int8.pte agrees with the model it was converted from on")
    assert "export.min_agreement = 98%" in err
    assert (tmp_path / "broken" / "stages" / "01_quantize" / "model_int8.pte").is_file()  # what was built stays for a look
    assert "**COMPRESSION FAILED** in stage 1 (quantize)" in (tmp_path / "broken" / "report.md").read_text()


def test_a_shipped_artifact_that_fails_validation_fails_the_run_without_strict(tiny_baseline, real_fashion_mnist, tmp_path, capsys):
    """No fp32 .pte matches eager PyTorch to 1e-9: the bundle's check fails, so the run exits 1 with the banner, and no
    target reads "pass" on that artifact, although the run wrote everything."""
    recipe = tmp_path / "strict_tolerance.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "strict_tolerance", "threads": 1, "baseline": {"checkpoint": str(tiny_baseline)},
        "data": {"name": "fashion-mnist", "root": str(real_fashion_mnist), "test_subset": 300}, "stages": [],
        "export": {"formats": ["pte"], "latency_runs": 5, "max_abs_diff": 1e-9},
        "targets": {"size_reduction": 0.0, "latency_reduction": 0.0, "max_accuracy_drop": 100.0},  # targets every artifact meets
    }))
    code = main(["run", str(recipe), "--runs-dir", str(tmp_path)])
    out, err = last_line(capsys)
    assert code == 1
    assert err.startswith("udacisense: VALIDATION FAILED: pte (model_fp32.pte): max |logit diff|") and "> 1e-09" in err
    result = json.loads((tmp_path / "strict_tolerance" / "result.json").read_text())
    assert result["validation"]["passed"] is False and result["targets"]
    assert not any(row["passed"] for row in result["targets"])  # measured within the goals, but on a file that failed
    assert "PASS" not in out
    report = (tmp_path / "strict_tolerance" / "report.md").read_text()
    assert "> **VALIDATION FAILED**: pte (model_fp32.pte)" in report and "| pass |" not in report
    assert "VALIDATION FAILED" in (tmp_path / "strict_tolerance" / "report.html").read_text()


def test_one_shot_pruning_that_destroys_the_model_fails_loudly(tiny_baseline, real_fashion_mnist, tmp_path, capsys):
    """98% of the weights zeroed without a fine-tune: the model falls to chance (measured 11.0% on these 500 images, whose
    chance level is 13.0%), and no training step exists to notice; the stage's verdict does."""
    code = main(["prune", "--checkpoint", str(tiny_baseline), "--method", "unstructured", "--ratio", "0.98", "--data-root",
                 str(real_fashion_mnist), *QUICK, "--runs-dir", str(tmp_path), "--name", "destroyed"])
    _, err = last_line(capsys)
    assert code == 1
    assert err.startswith("udacisense: COMPRESSION FAILED: stage 1 (prune_unstructured) left no usable model: test top-1") and "at chance" in err
    assert "**COMPRESSION FAILED** in stage 1 (prune_unstructured)" in (tmp_path / "destroyed" / "report.md").read_text()


BATCHNORM_COLLAPSE = '''
import torch.nn as nn


class FrozenStatistics(nn.Module):
    """Learns in train mode, where BatchNorm normalizes each batch; its running statistics never move (momentum 0), so in
    eval mode nothing removes the offset of 100 added before it, which drowns the images: the BatchNorm failure of a model
    whose statistics went stale."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16, momentum=0.0)
        self.classifier = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, num_classes))

    def forward(self, images):
        return self.classifier(self.norm(self.conv(images) + 100))
'''


def test_a_model_whose_eval_mode_collapsed_fails_training_without_a_validation_split(tmp_path, capsys):
    model_file = tmp_path / "frozen.py"
    model_file.write_text(BATCHNORM_COLLAPSE)
    code = main(["train", "--data", "synthetic", "--model", f"{model_file}:FrozenStatistics", "--val-fraction", "0", "--epochs", "3",
                 "--augment", "none", "--threads", "1", "--name", "collapsed", "--runs-dir", str(tmp_path)])
    _, err = last_line(capsys)
    history = json.loads((tmp_path / "collapsed" / "metrics.json").read_text())["history"]
    assert history[-1]["train_top1"] > 50  # what the old verdict read: train-mode accuracy, well above chance
    assert code == 1 and err.startswith("udacisense: TRAINING FAILED: test top-1") and "at chance" in err


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A user's small ImageFolder: 1,400 training images of pen-stroke digits, 28 px grey."""
    return write_stroke_digits(tmp_path_factory.mktemp("digits"), train_per_class=140, test_per_class=40)


@pytest.mark.slow
def test_qat_on_a_briefly_trained_mobilenet_converts_what_it_trained(digits, tmp_path, capsys):
    """The case that lost 30 points: MobileNetV3-Small (BatchNorm eps 1e-3) trained a few epochs on a small ImageFolder,
    then QAT. Before the fix, this setting (12 epochs, 87.5% test top-1) gave a fake-quantized model at 89.25% and an int8
    file at 65.00%; after it, 89.25% and 89.00%. The file's top-1 is within 1 point of the fake-quantized model's on the same images, and the command
    needs no --data-root: the checkpoint's training config names it."""
    assert main(["train", "--model", "mobilenet_v3_small", "--data", "imagefolder", "--data-root", str(digits), "--channels", "1",
                 "--image-size", "28", "--epochs", "12", "--threads", "1", "--name", "base", "--runs-dir", str(tmp_path)]) == 0
    # --min-agreement 95: int8 and fake-quantized arithmetic round differently, and this weak model has many near-ties
    # (98.25% agreement measured on these 400 images, 67.75% before the fix): the default 98% would be a coin toss.
    # --no-references: the baseline's own fp32 .pte (25 s of lowering) is not what this test is about
    assert main(["quantize", "--checkpoint", str(tmp_path / "base" / "best.pt"), "--method", "qat", "--epochs", "2", "--runs", "5",
                 "--min-agreement", "95", "--no-references", "--threads", "1", "--name", "qat", "--runs-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    record = [json.loads(line) for line in (tmp_path / "qat" / "stages.jsonl").read_text().splitlines()][-1]
    metrics = record["metrics"]
    labels = get_dataset(load_recipe(tmp_path / "qat" / "recipe.yaml").recipe.data).test.labels
    assert metrics["source_top1"] > above_chance(labels, 10, 30)  # a model that learned: the check below means something
    assert abs(metrics["test_top1"] - metrics["source_top1"]) <= 1.0
    assert metrics["conversion_agreement"] >= 96.0
    assert json.loads((tmp_path / "qat" / "result.json").read_text())["baseline"]["references"] == {}  # --no-references: none built


def test_a_command_refused_before_any_work_leaves_no_run_folder(tiny_baseline, tmp_path, capsys):
    arguments = ["prune", "--checkpoint", str(tiny_baseline), "--ratio", "0.5", *QUICK, "--runs-dir", str(tmp_path), "--name", "again"]
    code = main([*arguments, "--data-root", str(tmp_path / "nowhere")])
    _, err = last_line(capsys)
    assert code == 2 and "nowhere" in err
    assert not (tmp_path / "again").exists()  # so the corrected command is not refused with "already holds results"
