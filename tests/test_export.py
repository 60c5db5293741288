"""Export round-trips on a user's small CNN trained on real Fashion-MNIST, each artifact in its own runtime."""

import json

import pytest
import torch
import torch.nn as nn
from torchvision.ops import SqueezeExcitation

from udacisense import UdaciSenseError
from udacisense.bundle.build import build_bundle
from udacisense.bundle.verify import verify_bundle
from udacisense.cli import main
from udacisense.deploy.bench import run_probe
from udacisense.deploy.runtime import load_runner
from udacisense.formats import parse_formats

FORMATS = ["pte", "pte-int8", "onnx", "onnx-int8", "ptl"]


@pytest.fixture(scope="module")
def bundle(tiny_baseline, tmp_path_factory):
    output = tmp_path_factory.mktemp("deploy")
    manifest = build_bundle(tiny_baseline, output, FORMATS, calibration_images=64, test_subset=1000, latency_runs=5, log=lambda _: None)
    return output, manifest


def test_fp32_artifacts_match_eager(bundle):
    _, manifest = bundle
    for kind in ("pte", "onnx", "ptl"):
        check = manifest["artifacts"][kind]["validation"]
        assert check["images"] == 1000
        assert check["max_abs_diff"] < 1e-4, kind
        assert check["agreement"] == 100.0 and check["passed"], kind
        assert check["top1"] == pytest.approx(manifest["source"]["test_top1"])


def test_int8_pte_is_small_and_agrees(bundle):
    _, manifest = bundle
    fp32, int8 = manifest["artifacts"]["pte"], manifest["artifacts"]["pte-int8"]
    assert int8["bytes"] <= 0.35 * fp32["bytes"]
    assert int8["validation"]["agreement"] >= 95.0
    assert int8["export"]["delegated_share"] > 0.9  # XNNPACK runs nearly the whole graph
    onnx_int8 = manifest["artifacts"]["onnx-int8"]
    assert onnx_int8["bytes"] <= 0.4 * manifest["artifacts"]["onnx"]["bytes"]
    assert onnx_int8["validation"]["agreement"] >= 95.0


class SqueezeExcitationNet(nn.Module):
    """A user's small CNN with MobileNetV3's squeeze-and-excitation gate and hard-swish."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.Hardswish())
        self.gate = SqueezeExcitation(width, 8, scale_activation=nn.Hardsigmoid)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.gate(self.stem(images)))


def test_the_export_names_what_xnnpack_left_out_and_what_it_cost(tmp_path):
    """The gate's multiply brings layout conversions that stay outside the delegate (as in MobileNetV3): the export lists
    them and ExecuTorch's own profiler (ETDump, a fresh process at 1 thread) says how much of the execution they took;
    its kernels are those operators."""
    from udacisense.formats.executorch import export_pte

    torch.manual_seed(0)
    model, example = SqueezeExcitationNet().eval(), torch.randn(1, 1, 28, 28)
    for name, calibration in (("fp32", None), ("int8", [torch.randn(1, 1, 28, 28) for _ in range(4)])):
        export = export_pte(model, example, tmp_path / f"{name}.pte", calibration)
        timing = export["outside_delegate"]
        assert export["not_delegated_ops"] and timing["threads"] == 1 and timing["runs"] >= 40, name
        assert 0 < timing["outside_delegate_ms"] < timing["execute_ms"] and timing["outside_delegate_share"] < 0.5
        assert timing["kernels_ms"] and all(any(kernel.split(".")[0] in op for op in export["not_delegated_ops"]) for kernel in timing["kernels_ms"])


def test_int8_pte_really_holds_int8_weights(bundle):
    folder, manifest = bundle
    fp32_bytes = manifest["source"]["state_dict_bytes"]
    # 4-byte floats -> 1-byte ints: the weights alone cannot fit this file unless stored in under 2 bytes each (fp16
    # would fill half the fp32 size before any program, scale or bias); measured 0.32 of it
    assert (folder / "model_int8.pte").stat().st_size < 0.45 * fp32_bytes


def test_manifest_records_contract_hashes_and_measurements(bundle):
    folder, manifest = bundle
    assert manifest["input"]["shape"] == [1, 1, 28, 28] and len(manifest["input"]["classes"]) == 10
    for kind in FORMATS:
        entry = manifest["artifacts"][kind]
        assert (folder / entry["file"]).is_file() and len(entry["sha256"]) == 64
        assert entry["latency"]["1_thread"]["p50_ms"] > 0 and entry["memory"]["model_bytes"] > 0
    kotlin = (folder / "snippets" / "Classifier.kt").read_text()
    assert f"{manifest['input']['mean'][0]:.6f}f" in kotlin and '"Ankle boot"' in kotlin
    assert "model_int8.pte" in kotlin
    assert "Tensor<Float>" in (folder / "snippets" / "Classifier.swift").read_text()


def test_verify_passes_then_catches_tampering(bundle, tmp_path):
    folder, _ = bundle
    assert verify_bundle(folder) == []
    import shutil

    from udacisense.bundle.signing import bundle_files

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    artifact = tampered / "model_int8.pte"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    assert verify_bundle(tampered) == ["model_int8.pte sha256 differs from the manifest (file changed or tampered)"]  # refused unrun
    assert main(["verify", str(tampered)]) == 1

    # the files are intact but the runtime answers differently (another runtime version on another machine): drift
    drifted = tmp_path / "drifted"
    shutil.copytree(folder, drifted)
    golden = json.loads((drifted / "golden.json").read_text())
    golden["outputs"]["onnx"][0][0] += 0.5
    (drifted / "golden.json").write_text(json.dumps(golden))
    manifest = json.loads((drifted / "manifest.json").read_text())
    manifest["files"] = bundle_files(drifted)
    (drifted / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_bundle(drifted)
    assert len(problems) == 1 and problems[0].startswith("onnx:") and "golden outputs drift" in problems[0]


def test_wrong_input_shape_is_a_clear_error(bundle):
    folder, _ = bundle
    for kind, name in (("pte", "model_fp32.pte"), ("onnx", "model_fp32.onnx")):
        runner = load_runner(kind, folder / name)
        with pytest.raises(UdaciSenseError, match=r"expects input \((1|N), 1, 28, 28\) but got \(1, 3, 32, 32\)"):
            runner.predict(torch.zeros(1, 3, 32, 32))


def test_unknown_format_is_a_clear_error():
    with pytest.raises(UdaciSenseError, match=r"unknown export format .tensorrt. \(known: pte, pte-int8, onnx"):
        parse_formats("pte,tensorrt")


def test_every_format_declares_its_loader_or_that_it_cannot_run_here_and_the_selector_takes_the_phone_formats(tmp_path):
    from udacisense.bundle.app_code import selector_spec
    from udacisense.formats import FORMATS
    from udacisense.formats.base import phone_formats

    for name, export_format in FORMATS.items():
        missing = tmp_path / export_format.file_name
        if export_format.runs_here:  # deploy opens it through the format's loader: only the missing file stops it
            assert export_format.runtime.name and callable(export_format.runtime.load), name
            with pytest.raises(UdaciSenseError, match="does not exist"):
                load_runner(name, missing)
        else:
            with pytest.raises(UdaciSenseError, match=f"no runtime for artifact kind '{name}'"):
                load_runner(name, missing)
    assert phone_formats() == ["pte", "pte-int8", "tflite", "tflite-int8"]

    variants = [{"id": f"m/{name}", "model": "m", "format": name, "file": f"m/{spec.file_name}", "golden": "m/golden.json", "top1": 90.0,
                 "bytes": 1, "sha256": "0" * 64, "runs_here": spec.runs_here, "validation_failures": []} for name, spec in FORMATS.items()]
    manifest = {"input": {"shape": [1, 1, 28, 28], "classes": ["a", "b"]}, "golden": {"count": 1, "atol": 1e-4}, "created": "now",
                "models": {"m": {"input": {"mean": [0.5], "std": [0.5]}}}, "variants": variants}
    # the generated selector calls one phone runtime: that of the most preferred variant (ExecuTorch here)
    assert [variant["format"] for variant in selector_spec(manifest)["variants"]] == ["pte", "pte-int8"]


def test_cli_export_prints_the_table(tiny_baseline, tmp_path, capsys):
    code = main(["export", "--checkpoint", str(tiny_baseline), "--formats", "onnx", "--output", str(tmp_path / "d"),
                 "--test-subset", "200", "--runs", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "eager fp32" in out and "PASS" in out and "bundle verified" in out


@torch.library.custom_op("udacisense_test::twice", mutates_args=())
def twice(images: torch.Tensor) -> torch.Tensor:
    """A user's own operator: PyTorch runs it, but no mobile runtime has a kernel for it."""
    return images * 2


@twice.register_fake
def _(images: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(images)


def test_a_model_the_converter_cannot_handle_is_one_line_naming_the_operator(tmp_path):
    from conftest import TinyNet
    from udacisense.errors import ExportFailed
    from udacisense.formats import FORMATS

    class WithCustomOperator(TinyNet):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return super().forward(twice(images))

    with pytest.raises(ExportFailed) as failure:
        FORMATS.get("pte").export(WithCustomOperator().eval(), torch.zeros(1, 1, 28, 28), tmp_path, list)
    message = str(failure.value)
    assert message.startswith("pte: ") and "udacisense_test" in message and "twice" in message and "\n" not in message
    assert failure.value.exit_status == 1


def test_coreml_converts_and_is_marked_not_run(tmp_path):
    from conftest import TinyNet
    from udacisense.formats import FORMATS

    path, info = FORMATS.get("coreml").export(TinyNet(), torch.zeros(1, 1, 28, 28), tmp_path, list)
    assert path.name == "model.mlpackage" and (path / "Manifest.json").is_file()
    assert any(p.stat().st_size > 1000 for p in path.rglob("*.bin"))  # the weights file
    assert info["status"].startswith("converted, not run")


def test_latency_probes_run_in_fresh_children_and_a_broken_artifact_is_one_line(bundle, tmp_path):
    """Each probe is a child forked from the probe server: a file the runtime refuses fails that probe alone, in one
    line, and the next probe still runs; the model's memory excludes the runtime's shared code (a few hundred kB here,
    not the megabytes of libtorch's pages a child touches again)."""
    folder, manifest = bundle
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"not an ExecuTorch program" * 64)
    with pytest.raises(UdaciSenseError) as caught:
        run_probe("pte", broken, (1, 1, 28, 28), runs=5)
    assert str(caught.value).startswith(f"benchmark of pte {broken} failed: ") and "\n" not in str(caught.value)
    fp32, int8 = (run_probe(kind, folder / manifest["artifacts"][kind]["file"], (1, 1, 28, 28), runs=5) for kind in ("pte", "pte-int8"))
    assert fp32["latency"]["runs"] == 5 and fp32["latency"]["p50_ms"] > 0
    assert 0 < int8["memory"]["model_bytes"] < fp32["memory"]["model_bytes"] < 4 * manifest["artifacts"]["pte"]["bytes"]


def test_export_reads_an_imagefolder_checkpoints_data_root_from_its_training_config(user_model_file, tmp_path, capsys):
    from udacisense.cli import main
    from udacisense.data.strokes import write_stroke_digits

    digits = write_stroke_digits(tmp_path / "digits", train_per_class=20, test_per_class=5)
    # one epoch on 200 images: whether it learned is not the point here (its verdict may be TRAINING FAILED); its checkpoint is
    main(["train", "--model", f"{user_model_file}:TinyNet", "--data", "imagefolder", "--data-root", str(digits), "--channels", "1",
          "--image-size", "28", "--epochs", "1", "--threads", "1", "--name", "base", "--runs-dir", str(tmp_path)])
    assert (tmp_path / "base" / "last.pt").is_file()
    capsys.readouterr()
    # no --data-root: the checkpoint's config.yaml names the ImageFolder
    code = main(["export", "--checkpoint", str(tmp_path / "base" / "last.pt"), "--formats", "ptl", "--runs", "5", "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["test_images"] == 50
