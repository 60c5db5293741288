"""Golden I/O: a few test images with the source model's and every artifact's logits (``golden.json``), written when a
bundle is made and run again to check that each artifact still computes what it did then."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from udacisense.bundle.signing import MANIFEST_FILE
from udacisense.deploy.runtime import load_runner, run_batches
from udacisense.formats import FORMATS
from udacisense.io import atomic_write, sha256_of

GOLDEN_COUNT = 8
GOLDEN_ATOL = 1e-4


def golden_outputs(kind: str, path: Path, inputs: torch.Tensor) -> torch.Tensor:
    """The artifact's logits on the golden ``inputs``, in its own runtime with its default threads."""
    return run_batches(load_runner(kind, path, threads=None), inputs)


def write_golden(folder: Path, inputs, labels, source_logits, artifacts: dict[str, Any]) -> None:
    """``golden.json``: the inputs, their labels, the source's logits and the ``golden_outputs`` of each artifact entry."""
    golden = {
        "description": "normalized test images, their labels, the source model's logits and each artifact's logits",
        "shape": list(inputs.shape),
        "inputs": inputs.tolist(),
        "labels": labels.tolist(),
        "source_logits": source_logits.tolist(),
        "outputs": {kind: entry["golden_outputs"] for kind, entry in artifacts.items() if "golden_outputs" in entry},
    }
    text = json.dumps(golden)
    atomic_write(folder / "golden.json", lambda handle: handle.write(text.encode()))


def check_golden_outputs(folder: Path, hashed: bool) -> list[str]:
    """Run every runnable artifact of the single-model bundle in ``folder`` on its golden inputs (``hashed``: the files
    were checked against the manifest already; otherwise check each artifact's own sha256 first)."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        golden = json.loads((folder / manifest["golden"]["file"]).read_text())
    except (json.JSONDecodeError, KeyError, OSError, UnicodeDecodeError) as error:
        return [f"manifest or golden file unreadable: {error}"]
    problems = []
    inputs = torch.tensor(golden["inputs"], dtype=torch.float32)
    for kind, entry in manifest["artifacts"].items():
        path = folder / entry["file"]
        if not hashed:
            if not path.exists():
                problems.append(f"{kind}: {entry['file']} is missing")
                continue
            if sha256_of(path) != entry["sha256"]:
                problems.append(f"{kind}: {entry['file']} sha256 differs from the manifest (file changed or tampered)")
                continue
        if kind not in FORMATS or not FORMATS[kind].runs_here:
            continue
        try:
            outputs = golden_outputs(kind, path, inputs)
        except Exception as error:  # a damaged artifact can fail inside any runtime
            problems.append(f"{kind}: runtime failed on golden inputs: {type(error).__name__}: {str(error)[:120]}")
            continue
        expected = torch.tensor(golden["outputs"][kind])
        drift = (outputs - expected).abs().max().item()
        if drift > manifest["golden"]["atol"]:
            problems.append(f"{kind}: golden outputs drift by {drift:.2e} > {manifest['golden']['atol']:.0e}")
    return problems
