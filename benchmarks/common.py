"""Shared by the benchmark scripts: machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from udacisense.profile import machine_info as machine  # noqa: F401  (re-exported for the scripts)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def describe_machine(info: dict) -> str:
    """'<cpu> (<isa flags>), <n> cores, GPU: <gpu or none>; torch <version>' from :func:`machine`'s result."""
    isa = f" ({', '.join(info['isa']) or 'no AVX2/VNNI'})" if "isa" in info else ""
    return f"{info['cpu']}{isa}, {info['cores']} cores, GPU: {info['gpu'] or 'none'}; torch {info['torch']}"


def head_commit() -> str:
    """The short hash of the checked-out commit: what a result was measured at."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def provenance() -> dict:
    """How a result came about: the command as it was run (from the repository root), the date, the commit, the machine."""
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else Path(script.name)
    return {"command": shlex.join(["python", str(script), *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
            "commit": head_commit(), "machine": machine()}


def provenance_line(result: dict) -> str:
    """'`command` on <machine>; <date>, commit <hash>.' for a result that holds :func:`provenance`'s keys, and when
    its latencies were timed again (``retimed``, from :func:`provenance` too), that run's."""
    line = f"`{result['command']}` on {describe_machine(result['machine'])}; {result['date']}, commit {result['commit']}."
    if "retimed" in result:
        again = result["retimed"]
        line += f" Latencies timed again, one file after another, by `{again['command']}` on {again['date']}, commit {again['commit']}."
    return line


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


def run_stage(name: str, runs_dir: Path, checkpoint: Path, stage: dict, *, threads: int | None = None, formats: tuple[str, ...] = (),
              data: dict | None = None) -> dict:
    """One stage on ``checkpoint`` through the runner that recipes and commands use (Fashion-MNIST with the recipe's
    ``data`` keys, e.g. a train subset; every number measured on the whole test split); returns the run's result.json."""
    from udacisense.pipeline.recipe import validate_recipe
    from udacisense.pipeline.runner import run_pipeline

    raw = {"name": name, "baseline": {"checkpoint": str(checkpoint)}, "stages": [stage], "export": {"formats": list(formats)},
           **({"data": data} if data else {}),
           **({"threads": threads} if threads else {})}
    return run_pipeline(validate_recipe(raw), runs_dir, overwrite=True)
