"""Shared by the benchmark scripts: machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def load_results(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(name: str, data: dict) -> Path:
    from udacisense.io import write_json

    return write_json(RESULTS / f"{name}.json", data)


def replace_doc_section(section: str, body: str) -> None:
    """Rewrite the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` in docs/benchmarks.md."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
