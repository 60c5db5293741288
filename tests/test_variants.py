"""Bundles of variants and the selector: three real models of very different cost in two formats; budgets are derived
from the latencies the selector itself measured (no timing is written down here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import write_user_model_file
from udacisense.bundle.select import select_variant
from udacisense.bundle.signing import generate_key, sign_bundle
from udacisense.cli import main
from udacisense.errors import UdaciSenseError


def _train(runs: Path, data_root: Path, name: str, width: int) -> Path:
    from udacisense.config import DataConfig, RunConfig, TrainConfig
    from udacisense.train import train_run

    config = RunConfig(name=name, runs_dir=runs, data=DataConfig(root=data_root, train_subset=1000, test_subset=500, val_fraction=0.01),
                       model={"name": f"{write_user_model_file(runs)}:TinyNet", "kwargs": {"width": width}},
                       train=TrainConfig(epochs=2, batch_size=64, lr=0.1, threads=1))
    return Path(train_run(config)["run"]) / "best.pt"


@pytest.fixture(scope="module")
def variants(tmp_path_factory, real_fashion_mnist) -> Path:
    """TinyNet at widths 4, 48 and 96 (2 epochs each on 1,000 images; 0.09, 8.5 and 33 M MACs per image) as XNNPACK
    .pte files: three variants whose latencies are far apart on any machine."""
    runs = tmp_path_factory.mktemp("variant-models")
    small, mid, wide = (_train(runs, real_fashion_mnist, name, width) for name, width in (("small", 4), ("mid", 48), ("wide", 96)))
    output = runs / "bundle"
    code = main(["bundle", "--variants", f"{small},{mid},{wide}", "--formats", "pte", "--output", str(output),
                 "--test-subset", "500", "--runs", "20"])
    assert code == 0
    return output


@pytest.fixture(scope="module")
def signed_variants(variants, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the variants bundle signed with a new key: (bundle, public key)."""
    folder = tmp_path_factory.mktemp("signed-variants")
    private, public = generate_key(folder / "release")
    shutil.copytree(variants, folder / "bundle")
    sign_bundle(folder / "bundle", private)
    return folder / "bundle", public


def select(bundle: Path, budget: float, capsys, *options: str, runs: int = 30) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["select", str(bundle), "--latency-ms", repr(budget), "--runs", str(runs), "--json", *options])
    return code, json.loads(capsys.readouterr().out)


def refused(argv: list[str], capsys) -> str:
    """The one line on stderr of a command that must exit 2 without printing a selection."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, captured
    return err


def test_a_bundle_of_three_variants_verifies_with_every_number_measured(variants, capsys):
    manifest = json.loads((variants / "manifest.json").read_text())
    assert manifest["version"] == 2 and set(manifest["models"]) == {"small", "mid", "wide"}
    rows = manifest["variants"]
    assert len(rows) == 3 and [row["preference"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert (row["format"], row["backend"], row["dtype"]) == ("pte", "xnnpack", "fp32")
        assert row["latency"]["1_thread"]["p90_ms"] >= row["latency"]["1_thread"]["p50_ms"] > 0 and row["memory_mb"] > 0
        assert row["sha256"] == manifest["files"][row["file"]] and row["agreement"] == 100.0
    top1 = [row["top1"] for row in rows]
    assert top1 == sorted(top1, reverse=True)  # accuracy first
    assert manifest["models"]["wide"]["test_top1"] > manifest["models"]["small"]["test_top1"]  # the variants differ for real
    assert {"cpu", "isa", "cores"} <= set(manifest["machine"])
    report = (variants / "report.md").read_text()
    assert "ISA" in report and report.count("chosen:") == 2 and "NO VARIANT FITS" in report
    capsys.readouterr()
    assert main(["verify", str(variants)]) == 0 and "bundle verified" in capsys.readouterr().out


def test_select_takes_the_most_accurate_that_fits_then_the_fastest_then_fails_listing_latencies(variants, capsys):
    manifest = json.loads((variants / "manifest.json").read_text())
    code, generous = select(variants, 1e6, capsys)
    assert code == 0 and generous["chosen"] == manifest["variants"][0]["id"]  # everything fits: the most accurate
    measured = {m["id"]: m["p50_ms"] for m in generous["measurements"]}
    assert all(value > 0 for value in measured.values()) and len(measured) == 3
    fastest, second = sorted(measured.values())[:2]
    fastest_id = min(measured, key=measured.get)
    assert fastest_id == "small/pte" and second > 2 * fastest, measured  # 0.09 vs 8.5 M MACs

    code, tight = select(variants, (fastest * second) ** 0.5, capsys)
    assert code == 0 and tight["chosen"] == fastest_id, tight
    assert all(reason.startswith(("too slow", "fits, but")) for reason in tight["reasons"].values())

    capsys.readouterr()
    code = main(["select", str(variants), "--latency-ms", repr(fastest / 10), "--runs", "10"])
    out = capsys.readouterr().out
    assert code == 1 and "NO VARIANT FITS" in out
    listed = out.splitlines()[-1]
    assert all(re.search(re.escape(variant) + r" \d+\.\d{3} ms", listed) for variant in measured), listed


def test_a_changed_model_or_golden_file_is_rejected_by_its_sha256_before_it_runs(variants, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(variants, copy)
    rows = json.loads((copy / "manifest.json").read_text())["variants"]
    preferred, second, third = rows
    with open(copy / preferred["file"], "ab") as handle:  # still loadable, and its outputs on the golden inputs unchanged
        handle.write(b"\0" * 64)
    with open(copy / second["golden"], "ab") as handle:  # still the same JSON: the golden check alone would pass it
        handle.write(b" ")
    selection = select_variant(copy, 1e6, runs=3)
    assert selection.chosen is not None and selection.chosen.id == third["id"], selection.reasons
    for row, name in ((preferred, preferred["file"]), (second, second["golden"])):
        reason = selection.reasons[row["id"]]
        assert reason.startswith(f"sha256 of {name} is ") and reason.endswith("(file changed after bundling)"), reason
        measurement = next(m for m in selection.measurements if m.id == row["id"])
        assert measurement.golden_drift is None and measurement.p50_ms is None  # never run


def test_a_swapped_file_with_the_unsigned_manifest_rewritten_to_match_is_rejected_by_its_golden_check(variants, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(variants, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    preferred = manifest["variants"][0]
    other = next(row for row in manifest["variants"] if row["model"] != preferred["model"])
    shutil.copyfile(copy / other["file"], copy / preferred["file"])  # a loadable model, but not the one the manifest describes
    preferred["sha256"] = manifest["files"][preferred["file"]] = other["sha256"]  # unsigned: nothing vouches for the hashes
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, selection = select(copy, 1e6, capsys, runs=3)
    assert code == 0 and selection["chosen"] != preferred["id"]
    assert selection["reasons"][preferred["id"]].startswith("golden check failed"), selection["reasons"]
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 1 and "golden outputs drift" in capsys.readouterr().out


def test_a_signed_bundle_whose_manifest_was_edited_is_refused_as_a_whole(signed_variants, tmp_path, capsys):
    bundle, public = signed_variants
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    last = manifest["variants"].pop()
    manifest["variants"].insert(0, last | {"top1": 99.9, "preference": 1})  # the least accurate variant claims to be the best
    (edited / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(UdaciSenseError, match="signature does not match manifest.json"):
        select_variant(edited, 1e6, runs=3)
    for key in ([], ["--key", str(public)]):
        err = refused(["select", str(edited), "--latency-ms", "1e6", *key], capsys)
        assert "refused, no variant used: signature does not match manifest.json" in err, err


def test_select_with_a_key_refuses_an_unsigned_bundle_or_another_signer(signed_variants, variants, tmp_path, capsys):
    bundle, public = signed_variants
    err = refused(["select", str(variants), "--latency-ms", "1e6", "--key", str(public)], capsys)
    assert "unsigned bundle: no manifest.sig" in err, err
    other, _ = generate_key(tmp_path / "other")
    resigned = tmp_path / "resigned"  # a valid signature, by a key that is not the release key
    shutil.copytree(bundle, resigned)
    sign_bundle(resigned, other)
    err = refused(["select", str(resigned), "--latency-ms", "1e6", "--key", str(public)], capsys)
    assert "signed by another key" in err, err


def test_an_intact_signed_bundle_selects_with_and_without_its_key(signed_variants, capsys):
    bundle, public = signed_variants
    preferred = json.loads((bundle / "manifest.json").read_text())["variants"][0]["id"]
    code, selection = select(bundle, 1e6, capsys, "--key", str(public), runs=3)
    assert code == 0 and selection["chosen"] == preferred, selection
    assert select_variant(bundle, 1e6, runs=3).chosen.id == preferred


def test_a_single_model_bundle_is_read_as_one_variant_per_artifact(variants, capsys):
    code, selection = select(variants / "wide", 1e6, capsys)  # each model's folder is a complete version-1 bundle
    assert code == 0 and selection["chosen"] == "pte" and len(selection["measurements"]) == 1


def test_the_generated_java_selector_compiles_and_runs_against_a_stub_runtime(variants, tmp_path):
    if shutil.which("javac") is None:
        pytest.fail("javac is missing: install a JDK (make test installs default-jdk-headless as root)")
    stub = Path(__file__).parent / "java"
    sources = [str(path) for path in stub.rglob("*.java")] + [str(variants / "selector" / "VariantSelector.java")]
    compiled = subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(tmp_path), *sources], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run(["java", "-cp", str(tmp_path), "harness.SelectorHarness", str(variants), "1e6"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((variants / "manifest.json").read_text())
    device_ids = [row["id"] for row in manifest["variants"] if row["format"] == "pte"]
    # the stub returns zero logits: every variant reads its golden file in full and fails the check; none is chosen
    lines = run.stdout.splitlines()
    assert len(lines) == len(device_ids) + 1 and lines[-1] == "chosen none", lines
    assert all(line.startswith(f"rejected {vid}: golden check failed") for line, vid in zip(lines, device_ids)), lines
    for name in ("VariantSelector.kt", "VariantSelector.swift", "VariantSelector.java"):
        text = (variants / "selector" / name).read_text()
        assert re.findall(r'"((?:small|mid|wide)/pte)"', text) == device_ids, name  # the same variants, in the same order


def test_bad_input_is_one_line_with_exit_2(variants, tmp_path, capsys):
    for argv in (["select", str(tmp_path), "--latency-ms", "1"], ["select", str(variants), "--latency-ms", "0"],
                 ["bundle", "--variants", str(tmp_path / "nothing.pt"), "--output", str(tmp_path / "out")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err


def test_sources_from_a_search_run_are_its_pareto_points_with_int8_artifacts_as_built(tmp_path):
    from udacisense.bundle.variants import resolve_sources
    from udacisense.pipeline.sources import variant_models

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    for key in ("k1", "k2"):
        deploy = tmp_path / "search-run" / "search" / "trials" / key / "deploy"
        deploy.mkdir(parents=True)
        (deploy / "model_int8.pte").write_bytes(b"pte")
        artifacts = {"pte-int8": {"file": "model_int8.pte", "quantized": True, "export": {"method": "qat"}},
                     "onnx": {"file": "model_fp32.onnx", "quantized": False, "export": {}}}
        (deploy / "manifest.json").write_text(json.dumps({"version": 1, "source": {"checkpoint": str(checkpoint)}, "artifacts": artifacts}))
    (tmp_path / "search-run" / "search" / "pareto.json").write_text(json.dumps({"front": [{"key": "k1", "trial": "f3"}, {"key": "k2", "trial": "p7"}]}))
    sources = resolve_sources(variant_models([str(tmp_path / "search-run"), f"again={checkpoint}", str(checkpoint)]))
    assert [source.name for source in sources] == ["search-run-f3", "search-run-p7", "again", tmp_path.name]
    assert set(sources[0].prebuilt) == {"pte-int8"} and sources[0].prebuilt["pte-int8"][1] == {"method": "qat"}  # fp32 is exported again
    assert sources[2].prebuilt == {} and sources[3].checkpoint == checkpoint
