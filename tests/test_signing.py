"""Signed bundles: sign with a private key at export, verify with the public key; any changed byte, an added file or
another key's signature fails with one line; the private key never enters the bundle."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from udacisense.bundle.signing import SIGNATURE_FILE, sign_bundle
from udacisense.cli import main


@pytest.fixture(scope="module")
def signed(tmp_path_factory, tiny_baseline) -> tuple[Path, Path, Path]:
    """A small ONNX bundle of the tiny baseline, signed with a new key: (bundle, private key, public key)."""
    folder = tmp_path_factory.mktemp("signed")
    assert main(["keygen", str(folder / "keys" / "release")]) == 0
    private, public = folder / "keys" / "release", folder / "keys" / "release.pub"
    assert main(["export", "--checkpoint", str(tiny_baseline), "--formats", "onnx", "--output", str(folder / "deploy"),
                 "--test-subset", "200", "--runs", "5", "--sign", str(private)]) == 0
    return folder / "deploy", private, public


def verify(bundle: Path, key: Path | None, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", str(bundle), *(["--key", str(key)] if key else [])])
    return code, capsys.readouterr().out


def test_a_signed_bundle_verifies_with_its_public_key_and_holds_no_private_key(signed, capsys):
    bundle, private, public = signed
    code, out = verify(bundle, public, capsys)
    assert code == 0 and f"signature valid for {public}" in out
    code, out = verify(bundle, None, capsys)
    assert code == 0 and "signed by key sha256" in out and "signature intact (only --key PUBLIC_KEY.pem proves who signed)" in out
    secret = private.read_bytes()
    assert b"PRIVATE KEY" in secret and (private.stat().st_mode & 0o077) == 0  # readable by its owner only
    for path in bundle.rglob("*"):
        assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"model_fp32.onnx", "golden.json"} <= set(manifest["files"])  # the signature covers every other file too


def test_one_flipped_byte_in_any_file_or_an_added_file_fails_verification(signed, tmp_path, capsys):
    bundle, _, public = signed
    rng = random.Random(0)
    files = sorted(path.relative_to(bundle) for path in bundle.rglob("*") if path.is_file())
    assert len(files) >= 4 and Path(SIGNATURE_FILE) in files
    for name in files:
        copy = tmp_path / str(name).replace("/", "_")
        shutil.copytree(bundle, copy)
        data = bytearray((copy / name).read_bytes())
        data[rng.randrange(len(data))] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        code, out = verify(copy, public, capsys)
        assert code == 1 and "FAIL" in out, name
    extra = tmp_path / "extra"
    shutil.copytree(bundle, extra)
    (extra / "payload.so").write_bytes(b"\x7fELF")
    code, out = verify(extra, public, capsys)
    assert code == 1 and "payload.so is not in the manifest" in out


def test_another_keys_signature_or_no_signature_fails_with_the_key_and_old_bundles_still_verify(signed, tmp_path, capsys):
    bundle, _, public = signed
    assert main(["keygen", str(tmp_path / "other")]) == 0
    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    sign_bundle(forged, tmp_path / "other")
    assert verify(forged, None, capsys)[0] == 0  # intact under the key it stores: without --key, who signed is not known
    code, out = verify(forged, public, capsys)
    assert code == 1 and "signed by another key" in out
    record = json.loads((forged / SIGNATURE_FILE).read_text())  # claim the release key's fingerprint: the signature still fails
    record["public_key_sha256"] = json.loads((bundle / SIGNATURE_FILE).read_text())["public_key_sha256"]
    (forged / SIGNATURE_FILE).write_text(json.dumps(record))
    code, out = verify(forged, public, capsys)
    assert code == 1 and "signature does not match manifest.json" in out

    unsigned = tmp_path / "unsigned"
    shutil.copytree(bundle, unsigned)
    (unsigned / SIGNATURE_FILE).unlink()
    code, out = verify(unsigned, public, capsys)
    assert code == 1 and "unsigned bundle" in out
    code, out = verify(unsigned, None, capsys)
    assert code == 0 and "unsigned (sign it with" in out

    old = tmp_path / "old"  # a bundle from before the manifest listed every file: checked artifact by artifact
    shutil.copytree(unsigned, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert verify(old, None, capsys)[0] == 0


def test_key_mistakes_are_one_line_and_exit_2(signed, tiny_baseline, tmp_path, capsys):
    bundle, private, public = signed
    cases = [
        (["verify", str(bundle), "--key", str(private)], "is not a PEM public key (give the private key to --sign, the .pub file to --key)"),
        (["verify", str(bundle), "--key", str(tmp_path / "missing.pub")], "cannot read the public key"),
        (["export", "--checkpoint", str(tiny_baseline), "--formats", "onnx", "--output", str(tmp_path / "d"), "--sign", str(tmp_path / "nokey")],
         "signing key"),
        (["keygen", str(private)], "already exists"),
    ]
    for command, message in cases:
        capsys.readouterr()
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err


def test_a_recipe_signs_its_bundle_and_a_rerun_without_the_key_leaves_it_unsigned(signed, tiny_baseline, real_fashion_mnist, tmp_path, capsys):
    _, private, public = signed
    recipe = {"name": "signed", "threads": 1, "data": {"name": "fashion-mnist", "root": str(real_fashion_mnist), "test_subset": 200},
              "baseline": {"checkpoint": str(tiny_baseline)}, "stages": [],
              "export": {"formats": ["onnx"], "latency_runs": 5, "sign": str(private)}}
    path = tmp_path / "signed.yaml"
    path.write_text(json.dumps(recipe))
    assert main(["run", str(path), "--runs-dir", str(tmp_path)]) == 0
    assert verify(tmp_path / "signed" / "deploy", public, capsys)[0] == 0
    del recipe["export"]["sign"]  # same export otherwise: reused, but its old signature is dropped rather than left to mislead
    path.write_text(json.dumps(recipe))
    assert main(["run", str(path), "--runs-dir", str(tmp_path), "--resume"]) == 0
    assert "export: finished earlier, reused" in (tmp_path / "signed" / "pipeline.log").read_text()
    code, out = verify(tmp_path / "signed" / "deploy", None, capsys)
    assert code == 0 and "unsigned" in out


def test_an_edited_signed_manifest_fails_without_a_key_and_the_selector_refuses_it(signed, tmp_path, capsys):
    from udacisense.bundle.select import select_variant
    from udacisense.errors import UdaciSenseError

    bundle, _, public = signed
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["artifacts"]["onnx"]["validation"]["top1"] = 99.9
    (edited / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for key in (None, public):
        code, out = verify(edited, key, capsys)
        assert code == 1 and "signature does not match manifest.json" in out, out
        with pytest.raises(UdaciSenseError, match="refused, no variant used: signature does not match"):
            select_variant(edited, 1e6, runs=3, public_key=key)


def test_a_signature_file_from_before_keys_were_stored_checks_with_the_key_and_refuses_without(signed, tmp_path, capsys):
    bundle, _, public = signed
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    record = json.loads((old / SIGNATURE_FILE).read_text())
    assert "BEGIN PUBLIC KEY" in record.pop("public_key") and record["public_key_sha256"]
    (old / SIGNATURE_FILE).write_text(json.dumps(record, indent=2))  # byte for byte what the signer wrote then
    assert verify(old, public, capsys)[0] == 0
    code, out = verify(old, None, capsys)
    assert code == 1 and "pass --key PUBLIC_KEY.pem" in out, out
    capsys.readouterr()
    assert main(["select", str(old), "--latency-ms", "1e6", "--runs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "refused" in err and "pass --key PUBLIC_KEY.pem" in err and "\n" not in err, err
    capsys.readouterr()
    assert main(["select", str(old), "--latency-ms", "1e6", "--runs", "3", "--key", str(public)]) == 0
    assert "chosen: onnx" in capsys.readouterr().out
