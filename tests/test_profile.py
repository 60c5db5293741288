import pytest
import torch
import torch.nn as nn

from conftest import TinyNet
from udacisense.models import create_model
from udacisense.profile import (
    count_macs,
    count_parameters,
    format_profile,
    measure_peak_memory,
    profile_model,
    serialized_size,
)


def test_parameter_counts_match_numel_and_count_zeros():
    model = create_model("mobilenet_v3_small")
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model.classifier[0].weight.zero_()
    assert count_parameters(model)["nonzero"] == counts["nonzero"] - model.classifier[0].weight.numel()


def test_conv_and_linear_macs_match_hand_formula():
    conv = nn.Sequential(nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1))
    macs, per_module = count_macs(conv, (1, 3, 32, 32))
    # output 16 x 16 x 16, each output value costs in_channels * k * k multiply-accumulates
    assert macs == 16 * 16 * 16 * 3 * 3 * 3 == per_module["0"]
    grouped = nn.Sequential(nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=8))
    assert count_macs(grouped, (1, 8, 10, 10))[0] == 8 * 10 * 10 * 3 * 3
    assert count_macs(nn.Sequential(nn.Linear(20, 30)), (4, 20))[0] == 4 * 20 * 30


def test_zeros_shrink_gzip_size_but_not_dense_size():
    model = TinyNet(width=32)
    before = serialized_size(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter[torch.rand_like(parameter) < 0.9] = 0
    after = serialized_size(model)
    assert after["bytes"] == before["bytes"]
    assert after["gzip_bytes"] < 0.5 * before["gzip_bytes"]


def test_profile_has_every_measurement():
    model = TinyNet()
    profile = profile_model(model, (1, 1, 28, 28), warmup=2, runs=5, memory=False)
    assert profile["macs"] == sum(row["macs"] for row in profile["layers"])
    assert {row["name"] for row in profile["layers"]} >= {"features.0", "features.4", "classifier"}
    timing = profile["latency"]["1_thread"]
    assert 0 < timing["p50_ms"] <= timing["p90_ms"] and timing["runs"] == 5
    assert "MACs" in format_profile(profile)


def test_peak_memory_grows_with_model_size():
    small = measure_peak_memory(TinyNet(width=4), (1, 1, 28, 28))
    large = measure_peak_memory(nn.Sequential(nn.Flatten(), nn.Linear(784, 20000)), (1, 1, 28, 28))
    # the large model's weights alone are 784 * 20000 * 4 bytes = 62.7 MB
    assert large["model_bytes"] > small["model_bytes"] + 50e6


def test_latency_thread_counts_come_from_the_environment_or_fail_in_one_line(monkeypatch):
    from udacisense.deploy.bench import LATENCY_THREADS_VARIABLE, latency_threads, thread_counts
    from udacisense.errors import UdaciSenseError

    monkeypatch.setenv(LATENCY_THREADS_VARIABLE, "4, 1")
    assert thread_counts() == [1, 4]
    profile = profile_model(TinyNet(width=4), (1, 1, 28, 28), warmup=1, runs=3, memory=False)
    assert set(profile["latency"]) == {"1_thread", "4_threads"}
    with latency_threads(2):  # a caller's own choice wins
        assert thread_counts() == [2]
    for bad in ("all", "0", "1,,2"):
        monkeypatch.setenv(LATENCY_THREADS_VARIABLE, bad)
        with pytest.raises(UdaciSenseError, match="comma-separated") as caught:
            thread_counts()
        assert "\n" not in str(caught.value)
