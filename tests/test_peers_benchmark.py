"""benchmarks/peers.py: its argument parsing and its table (the peer run itself is a benchmark: `make benchmark-peers`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import peers  # noqa: E402


def test_arguments_need_a_baseline_and_cap_the_search_at_twice_the_recipe(capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.parse_args([])
    assert exit_info.value.code == 2 and "--baseline is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        peers.parse_args(["--baseline", "best.pt", "--budget-factor", "2.5"])
    assert exit_info.value.code == 2 and "at most twice" in capsys.readouterr().err
    args = peers.parse_args(["--baseline", "best.pt", "--set", "data.train_subset=12000", "--set", "threads=1"])
    assert (args.baseline, args.overrides) == (Path("best.pt"), ["data.train_subset=12000", "threads=1"])
    assert (args.budget_factor, args.rounds, args.retime) == (2.0, 5, False)
    assert peers.parse_args(["--render"]).baseline is None


def row(path: str, top1: float, megabytes: float, p50: float, memory_mb: float, seconds: float = 10.0, **extra) -> dict:
    return {"path": path, "top1": top1, "agreement": top1 + 1, "bytes": megabytes * 1e6, "p50_ms": p50, "p50_range_ms": [p50 - 0.01, p50 + 0.02],
            "p90_ms": p50 * 1.2, "model_bytes": memory_mb * 1e6, "seconds": seconds, **extra}


RESULTS = {
    "machine": {"cpu": "Test CPU", "isa": ["avx2"], "cores": 2, "gpu": None, "torch": "2.14.1"}, "date": "2026-12-06", "commit": "abc1234",
    "command": "python benchmarks/peers.py --baseline best.pt", "rounds": 5, "runs": 300,
    "context": {"baseline": "/runs/base/best.pt", "baseline_top1": 90.0, "test_images": 10000, "mobile_seconds": 600.0, "budget_seconds": 1200.0,
                "budget_factor": 2.0, "max_drop": 1.0, "max_megabytes": 0.5, "data": {"train_subset": 12000},
                "search": {"trials": 9, "seconds": 1200.0, "feasible_found": True, "failed": []}},
    "rows": {  # in no particular order: the table orders them
        "search": row("s/model_int8.pte", 89.5, 0.30, 0.20, 1.0, 1200.0, summary="prune 30% MACs, qat int8"),
        "pte": row("p/model.pte", 90.0, 6.0, 0.50, 6.5),
        "nncf": row("nncf/model.xml", 89.7, 1.6, 0.12, 0.8, kind="openvino"),  # the fastest and the leanest: a peer
        "mobile": row("m/model_int8.pte", 89.8, 0.35, 0.22, 1.1, 600.0),  # the most accurate: ours
        "onnx-int8": row("o/model_int8.onnx", 80.0, 0.01, 0.05, 0.1),  # smallest and fastest of all, but 10 pt below: out of the race
    },
}


def test_table_orders_rows_marks_ours_and_names_each_axis_leader():
    text = peers.render(RESULTS)
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0] for line in table] == ["| fp32 baseline (pte)", "| onnxruntime static QDQ (onnx-int8)", "| NNCF PTQ",
                                                       "| **mobile.yaml**", "| **search**"]
    assert "| 0.220 [0.210–0.240] | 0.264 | 1.10 | 10.0 min |" in table[3]  # p50 [rounds' range], p90, memory MB, compression time
    assert "`model.xml` | OpenVINO | 89.70% | 90.70% | 1.600 |" in table[2]
    assert "Test CPU (avx2), 2 cores" in text and "commit abc1234" in text and "it ran 9 trials in 20.0 min (0 failed): its most accurate" in text
    leaders = text.split("Who leads each axis")[1]
    # the 80% file is 10 pt below the baseline, beyond the 1 pt limit: never a leader; fp32 files are not in the race
    assert "- top-1: **mobile.yaml** (89.80%), ours." in leaders
    assert "- size: **search** (0.300 MB), ours." in leaders
    assert "- p50 latency: **NNCF PTQ** (0.120 ms), a peer; our best is search at 0.200 ms." in leaders
    assert "- memory: **NNCF PTQ** (0.80 MB), a peer; our best is search at 1.00 MB." in leaders


def test_a_search_that_met_no_target_has_no_row_and_the_text_says_so():
    results = RESULTS | {"rows": {key: row for key, row in RESULTS["rows"].items() if key != "search"}}
    text = peers.render(results)
    assert "it ran 9 trials in 20.0 min (0 failed): **none met the targets**, so it has no row." in text and "Test CPU (avx2)" in text
    assert "| **search** |" not in text and "- size: **mobile.yaml** (0.350 MB), ours." in text


def test_plot_is_a_png_of_every_row():
    assert peers.pareto_png(RESULTS)[:8] == b"\x89PNG\r\n\x1a\n"
