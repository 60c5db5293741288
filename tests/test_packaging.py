"""A built wheel, installed (not editable) in a fresh virtual environment, finds its shipped recipes."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_and_checks_the_shipped_recipes(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(wheels.glob("udacisense-*.whl"))
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The heavy pinned dependencies come from this environment (no download); udacisense itself only from the wheel.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)

    where = subprocess.run([str(python), "-c", "import udacisense; print(udacisense.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the source tree
    listing = subprocess.run([str(venv / "bin" / "udacisense"), "recipes"], cwd=tmp_path, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert all(name in listing.stdout for name in ("quickstart", "mobile", "seed", "prune_channels"))
    check = subprocess.run([str(venv / "bin" / "udacisense"), "check", "quickstart"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "recipe 'quickstart' is valid" in check.stdout, check.stderr
