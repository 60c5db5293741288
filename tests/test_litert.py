"""LiteRT (`.tflite`): converted by litert-torch, validated and timed in ai-edge-litert's interpreter like every other
artifact, carried by bundles and `select`; a converter gap fails that format alone, loudly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from udacisense.cli import main

QUICK = ["--test-subset", "500", "--runs", "10", "--calibration-images", "64"]


@pytest.fixture(scope="module")
def litert_bundle(tiny_baseline, real_fashion_mnist, tmp_path_factory):
    output = tmp_path_factory.mktemp("litert") / "bundle"
    code = main(["export", "--checkpoint", str(tiny_baseline), "--formats", "tflite,tflite-int8", "--data-root", str(real_fashion_mnist),
                 "--output", str(output), *QUICK])
    assert code == 0
    return output, json.loads((output / "manifest.json").read_text())


def test_tflite_files_are_validated_and_timed_in_the_litert_interpreter(litert_bundle):
    folder, manifest = litert_bundle
    fp32, int8 = manifest["artifacts"]["tflite"], manifest["artifacts"]["tflite-int8"]
    assert fp32["runtime"] == int8["runtime"] == "litert"
    # fp32: the same function as eager PyTorch to float rounding; int8: the same decisions on nearly every image
    assert fp32["validation"]["passed"] and fp32["validation"]["max_abs_diff"] < 1e-3 and fp32["validation"]["agreement"] == 100.0
    assert int8["validation"]["passed"] and int8["validation"]["agreement"] >= 98.0
    assert int8["bytes"] < 0.4 * fp32["bytes"]  # int8 weights: about a quarter of the fp32 file
    assert all(entry["latency"]["1_thread"]["p50_ms"] > 0 and entry["memory"] for entry in (fp32, int8))  # in fresh processes, as every artifact
    assert manifest["versions"]["ai-edge-litert"] == "2.3.0" and manifest["export_failures"] == {}


def test_a_full_integer_tflite_file_holds_int8_tensors_and_the_runner_hides_them(litert_bundle):
    from ai_edge_litert.interpreter import Interpreter

    from udacisense.deploy.runtime import load_runner

    folder, manifest = litert_bundle
    interpreter = Interpreter(model_path=str(folder / "model_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8 and interpreter.get_output_details()[0]["dtype"] == np.int8
    runner = load_runner("tflite-int8", folder / "model_int8.tflite", threads=1)
    golden = json.loads((folder / "golden.json").read_text())
    images = torch.tensor(golden["inputs"], dtype=torch.float32)[:1]
    logits = runner.predict(images)
    assert logits.dtype == torch.float32 and logits.shape == (1, 10)


def test_select_carries_tflite_variants_and_the_snippet_loads_with_litert(litert_bundle, capsys):
    folder, manifest = litert_bundle
    capsys.readouterr()
    assert main(["select", str(folder), "--latency-ms", "1000", "--runs", "10", "--json"]) == 0
    selection = json.loads(capsys.readouterr().out)
    measured = {row["format"]: row for row in selection["measurements"]}
    assert set(measured) == {"tflite", "tflite-int8"}, selection
    assert all(row["problem"] is None and row["p50_ms"] > 0 and row["golden_drift"] is not None for row in measured.values()), selection
    assert selection["chosen"] is not None
    # the snippets load the bundle's int8 file (here the LiteRT one), quantizing its input as the file asks
    kotlin, swift = ((folder / "snippets" / name).read_text() for name in ("Classifier.kt", "Classifier.swift"))
    assert "import org.tensorflow.lite.Interpreter" in kotlin and "model_int8.tflite" in kotlin and "quantizationParams()" in kotlin
    assert "import TensorFlowLite" in swift and "quantizationParameters" in swift and "org.pytorch" not in kotlin + swift


def test_a_converter_gap_fails_that_format_alone_and_the_others_ship(tiny_baseline, real_fashion_mnist, tmp_path, capsys, monkeypatch):
    import litert_torch

    def no_lowering(*args, **kwargs):
        raise RuntimeError("Lowering not found: aten.grid_sampler_2d.default")

    monkeypatch.setattr(litert_torch, "convert", no_lowering)
    output = tmp_path / "bundle"
    capsys.readouterr()
    code = main(["export", "--checkpoint", str(tiny_baseline), "--formats", "tflite,ptl", "--data-root", str(real_fashion_mnist),
                 "--output", str(output), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("udacisense: VALIDATION FAILED: tflite: not exported: tflite: RuntimeError: Lowering not found: aten.grid_sampler_2d")
    manifest = json.loads((output / "manifest.json").read_text())
    assert list(manifest["artifacts"]) == ["ptl"] and manifest["artifacts"]["ptl"]["validation"]["passed"]
    assert (output / "model.ptl").is_file() and not (output / "model_fp32.tflite").exists()


def test_a_variant_bundle_of_tflite_files_gets_a_litert_selector_that_compiles_and_runs(litert_bundle, real_fashion_mnist, tmp_path):
    """The generated Java selector calls LiteRT's API when the preferred variants are .tflite: compiled with javac against
    a stub of LiteRT's Java API (zero logits), every variant is loaded, run and rejected by its golden check."""
    import shutil
    import subprocess
    from pathlib import Path

    folder, _ = litert_bundle
    output = tmp_path / "variants"
    # the bundle's int8 file as built; --min-agreement 95: this weak model's int8 files agree 97.7% with it on the whole split
    assert main(["bundle", "--variants", str(folder), "--formats", "tflite", "--output", str(output), "--data-root", str(real_fashion_mnist),
                 *QUICK, "--min-agreement", "95"]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert {row["format"] for row in manifest["variants"]} == {"tflite", "tflite-int8"}
    java = (output / "selector" / "VariantSelector.java").read_text()
    assert "import org.tensorflow.lite.Interpreter;" in java and "org.pytorch" not in java
    if shutil.which("javac") is None:
        pytest.fail("javac is missing: install a JDK (make test installs default-jdk-headless as root)")
    stub = Path(__file__).parent / "java"
    sources = [str(path) for path in stub.rglob("*.java") if "pytorch" not in path.parts] + [str(output / "selector" / "VariantSelector.java")]
    compiled = subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(tmp_path / "classes"), *sources], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    for input_scale in ("0", "0.0078125"):  # the float path, and the full-integer one (the input quantized to int8)
        run = subprocess.run(["java", f"-Dstub.inputScale={input_scale}", "-cp", str(tmp_path / "classes"), "harness.SelectorHarness", str(output),
                              "1e6"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[-1] == "chosen none" and len(lines) == len(manifest["variants"]) + 1, lines
        assert all("golden check failed" in line for line in lines[:-1]), lines


def test_a_bundle_with_executorch_and_litert_files_gets_a_snippet_pair_for_each_runtime(litert_bundle, tmp_path):
    from udacisense.bundle.app_code import write_snippets

    _, manifest = litert_bundle
    both = manifest | {"artifacts": {"pte": {"file": "model_fp32.pte"}, **manifest["artifacts"]}}
    write_snippets(tmp_path, both)
    names = sorted(path.name for path in (tmp_path / "snippets").iterdir())
    assert names == ["Classifier.kt", "Classifier.swift", "ClassifierExecuTorch.kt", "ClassifierExecuTorch.swift"]
    primary, other = ((tmp_path / "snippets" / name).read_text() for name in ("Classifier.kt", "ClassifierExecuTorch.kt"))
    # the int8 file is preferred (the LiteRT one here); the other runtime's pair loads its own file, under its own class name
    assert "model_int8.tflite" in primary and "org.tensorflow.lite" in primary and "object UdaciSenseClassifier" in primary
    assert "model_fp32.pte" in other and "org.pytorch.executorch" in other and "object UdaciSenseExecuTorchClassifier" in other
