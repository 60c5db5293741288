"""The Python API: the README's notebook example runs as written, on a user's small baseline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import udacisense as us
from udacisense.errors import UdaciSenseError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_python_example() -> str:
    section = README.read_text().split("## From Python (notebooks)")[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_notebook_example_runs_as_written(tmp_path, tiny_baseline, monkeypatch, capsys):
    shutil.copytree(tiny_baseline.parent, tmp_path / "runs" / "baseline")  # the checkpoint and the config.yaml of its training
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    pruned, int8, bundle, front = (namespace[name] for name in ("pruned", "int8", "bundle", "front"))
    before = sum(p.numel() for p in namespace["model"].parameters())
    assert sum(p.numel() for p in pruned.model.parameters()) < 0.5 * before  # half the channels: about a quarter of the weights
    assert pruned.run_dir.parent == tmp_path / "runs" and pruned.run_dir.name.startswith("prune_channels-")
    assert (pruned.run_dir / "report.html").is_file()
    assert pruned.result["baseline"]["test_images"] == 500  # the example's data options reached the run
    assert int8.artifacts["pte-int8"].is_file() and int8.metrics["runtime"] == "pte-int8" and int8.metrics["test_top1"] > 30
    assert int8.metrics["agreement"] >= 95  # the int8 file agrees with the model it was converted from, as asked
    assert set(bundle["artifacts"]) == {"onnx", "onnx-int8"} and all(entry["validation"]["passed"] for entry in bundle["artifacts"].values())
    assert front["trial_count"] == 2 and front["front"] and any("quantize" in point["summary"] for point in front["front"])
    assert "pruned " in capsys.readouterr().out

    # a second call with the same parameters reuses the finished stage (a notebook cell run again); other parameters
    # get a folder of their own, so the first result stays what it was
    checkpoint = Path(pruned.result["stages"][0]["checkpoint"])
    written = checkpoint.stat().st_mtime_ns
    again = us.compress(namespace["model"], us.PruneChannels(ratio=0.5, fine_tune={"epochs": 1}), data=namespace["quick"])
    assert again.run_dir == pruned.run_dir and checkpoint.stat().st_mtime_ns == written
    assert torch.equal(next(again.model.parameters()), next(pruned.model.parameters()))
    other = us.compress(namespace["model"], us.PruneChannels(ratio=0.25), data=namespace["quick"])
    assert other.run_dir != pruned.run_dir and checkpoint.stat().st_mtime_ns == written


def test_api_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(UdaciSenseError, match="checkpoint .*missing.pt does not exist"):
        us.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UdaciSenseError, match="no checkpoint to take its input contract from"):
        us.compress(us.create_model("mobilenet_v3_small"), us.Quantize(), runs_dir=tmp_path)
    with pytest.raises(UdaciSenseError, match="is no stage's parameters"):
        us.compress(tmp_path / "x.pt", us.Quantize.__mro__[1](), runs_dir=tmp_path)
