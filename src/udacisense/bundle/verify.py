"""``verify_bundle``: a bundle's signature, every file's sha256 and every runnable artifact's golden outputs."""

from __future__ import annotations

import json
from pathlib import Path

from udacisense.bundle.golden import check_golden_outputs
from udacisense.bundle.signing import MANIFEST_FILE, bundle_files, check_signature
from udacisense.errors import UdaciSenseError


def verify_bundle(folder: Path, public_key: Path | None = None) -> list[str]:
    """Re-check the signature (see :func:`~udacisense.bundle.signing.check_signature`: a signed bundle's always, and with
    ``public_key`` one by that key is required), every file's sha256 and every runnable artifact's golden outputs;
    returns the problems found. A bundle of variants (version 2) is checked model folder by model folder. Bundles made
    before the manifest listed every file are checked artifact by artifact."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise UdaciSenseError(f"{folder} has no manifest.json; create the bundle with 'udacisense export'")
    problems = check_signature(folder, public_key)
    try:
        manifest = json.loads(manifest_path.read_text())
        models = [folder / model["folder"] for model in manifest["models"].values()] if manifest.get("version", 1) >= 2 else [folder]
    except (json.JSONDecodeError, KeyError, OSError, UnicodeDecodeError, TypeError) as error:
        return problems + [f"manifest unreadable: {error}"]
    if "files" in manifest:
        present = bundle_files(folder)
        for name, digest in manifest["files"].items():
            if name not in present:
                problems.append(f"{name} is missing")
            elif present[name] != digest:
                problems.append(f"{name} sha256 differs from the manifest (file changed or tampered)")
        problems += [f"{name} is not in the manifest (added after the bundle was made)" for name in present if name not in manifest["files"]]
        if problems:
            return problems  # do not run files that are not what the manifest says
    for model_folder in models:
        if not model_folder.resolve().is_relative_to(folder.resolve()):
            problems.append(f"model folder {model_folder} is outside the bundle (a forged manifest?)")
            continue
        prefix = "" if model_folder == folder else f"{model_folder.name}/"
        problems += [prefix + problem for problem in check_golden_outputs(model_folder, hashed="files" in manifest)]
    return problems
