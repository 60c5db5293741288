"""Quantization (dynamic, static PT2E, QAT, mixed precision) and low-rank factorization: measured effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from conftest import TinyNet
from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.config import validate_config
from udacisense.errors import UdaciSenseError
from udacisense.formats.executorch import export_pte
from udacisense.models import create_model
from udacisense.profile import serialized_size
from udacisense.techniques.lowrank import LowRankConfig, factorize, factorize_layer
from udacisense.techniques.mixed_precision import choose_float_layers, layer_quantization_sensitivity, sqnr
from udacisense.techniques.quantize import (
    QuantizeConfig,
    convert_qat,
    freeze_qat,
    int8_weight_share,
    make_quantizer,
    prepare_qat,
    quantize_dynamic,
    quantize_pt2e_static,
)


def calibration(count: int = 4, batch: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 1, 28, 28, generator=generator) for _ in range(count)]


def weight_is_int8(graph: torch.fx.GraphModule) -> dict[str, bool]:
    """For each conv/linear node, keyed by its source layer: is its weight dequantized from int8?"""
    result = {}
    for node in graph.graph.nodes:
        if node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
            layer = list(node.meta["nn_module_stack"].values())[-1][0].replace("L['self'].", "")
            weight = node.args[1]
            result[layer] = weight.op == "call_function" and "dequantize" in str(weight.target)
    return result


def test_static_int8_pte_is_a_third_of_fp32_and_holds_int8_weights(tmp_path):
    model = TinyNet(width=64).eval()  # MobileNetV3's int8 .pte is checked in test_export; this one exports in seconds
    example = torch.zeros(1, 1, 28, 28)
    graph = quantize_pt2e_static(model, example, calibration())
    assert int8_weight_share(graph) > 0.99
    export_pte(model, example, tmp_path / "fp32.pte")
    export_pte(graph, example, tmp_path / "int8.pte")
    assert (tmp_path / "int8.pte").stat().st_size <= 0.35 * (tmp_path / "fp32.pte").stat().st_size


def test_mixed_precision_leaves_exactly_the_chosen_layers_in_float():
    model = TinyNet(width=16).eval()
    graph = quantize_pt2e_static(model, torch.zeros(1, 1, 28, 28), calibration(), protect=("features.4",))
    assert weight_is_int8(graph) == {"features.0": True, "features.4": False, "classifier": True}


def test_choose_float_layers_returns_the_least_tolerant_layers_with_reasons():
    torch.manual_seed(0)
    model = TinyNet(width=16).eval()
    calibration_batches = calibration(2, batch=16)
    batches = [(images, torch.randint(0, 10, (16,))) for images in calibration(2, batch=16)]
    sensitivity = layer_quantization_sensitivity(model, calibration_batches, batches)
    assert set(sensitivity["layers"]) == {"features.0", "features.4", "classifier"}
    ranked = sorted(sensitivity["layers"], key=lambda name: sensitivity["layers"][name]["sqnr_db"])
    plan = choose_float_layers(model, sensitivity, calibration_batches, batches, max_drop=-1.0, max_float_layers=2)
    assert plan["float_layers"] == ranked[:2] and not plan["met"]  # an impossible budget stops at the cap
    assert set(plan["reasons"]) == set(ranked[:2]) and len(plan["steps"]) == 3
    assert sqnr(torch.ones(4), torch.ones(4)) == float("inf")


def test_qat_trains_on_cpu_without_touching_the_source_and_freezes_batchnorm():
    torch.manual_seed(0)
    model = TinyNet(width=16).eval()
    source_weight = model.features[0].weight.detach().clone()
    prepared = prepare_qat(model, torch.zeros(1, 1, 28, 28))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    prepared.train()
    for batch in (8, 5):  # the batch dimension is dynamic
        loss = nn.functional.cross_entropy(prepared(torch.randn(batch, 1, 28, 28)), torch.randint(0, 10, (batch,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(model.features[0].weight, source_weight)
    running_means = [buffer.clone() for name, buffer in prepared.named_buffers() if "running_mean" in name]
    freeze_qat(prepared, batchnorm=True, observers=True)
    prepared.train()
    prepared(torch.randn(8, 1, 28, 28) * 5 + 3)
    assert all(torch.equal(a, b) for a, b in zip(running_means, [b for n, b in prepared.named_buffers() if "running_mean" in n]))


def test_qat_conversion_folds_batchnorm_and_ships_no_training_state(tmp_path):
    """Converting folds BatchNorm into the convolutions; its running statistics must not ship in the .pte as program
    state (they added 17.6 KB to a pruned MobileNetV3-Small's 0.348 MB int8 file)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    prepared = prepare_qat(TinyNet(width=16).eval(), torch.zeros(1, 1, 28, 28))
    prepared.train()
    prepared(torch.randn(8, 1, 28, 28))
    converted = convert_qat(prepared)
    assert not [node for node in converted.graph.nodes if "batch_norm" in str(node.target)]
    assert not [name for name, _ in converted.named_buffers() if "running_" in name or "num_batches" in name]
    export_pte(converted, torch.zeros(1, 1, 28, 28), tmp_path / "qat.pte")
    program = deserialize_pte_binary((tmp_path / "qat.pte").read_bytes()).program
    # everything the model needs is inside the XNNPACK delegate; outside it only a few scalars (with the statistics: 400 bytes)
    assert sum(len(buffer.storage) for buffer in program.constant_buffer) < 256


def test_qat_conversion_computes_what_the_fake_quantized_model_computed():
    """torchao's QAT conv-BatchNorm patterns hard-code eps 1e-5. A model with eps 1e-3 (MobileNetV3's) and quiet channels
    (running variance small next to 1e-3, as after a short training on little data) converted to a graph that differed
    from its fake-quantized self: SQNR 4-9 dB here, and 30 points of top-1 lost on a user's small ImageFolder."""
    torch.manual_seed(0)

    def block(inputs: int, outputs: int, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(outputs, eps=1e-3, momentum=None), nn.ReLU()]

    model = nn.Sequential(*block(1, 16), *block(16, 16, groups=16), *block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    images = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight[::2] *= 0.03  # every other channel is quiet: its variance is about 1e-4
        model.train()(images)  # momentum None: the running statistics are these images' own
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()
    prepared = prepare_qat(model, torch.zeros(1, 1, 28, 28)).eval()
    prepared(images)  # the observers calibrate (they observe in eval mode too)
    fake_quantized = prepared(images)
    converted = convert_qat(prepared)(images)
    assert sqnr(model(images), fake_quantized) > 30  # eval mode computes what the float model did, up to int8 rounding
    assert sqnr(fake_quantized, converted) > 30  # and conversion keeps it (before the fix: 4 dB)
    assert {module.eps for module in model.modules() if isinstance(module, nn.BatchNorm2d)} == {1e-3}  # the source is untouched


def test_dynamic_quantization_says_it_only_touches_linear_layers():
    model = create_model("mobilenet_v3_small", num_classes=10, in_channels=1)
    quantized, report = quantize_dynamic(model)
    assert report["quantized_layers"] == ["classifier.0", "classifier.3"]
    assert "only converts Linear" in report["note"] and 0 < report["quantized_parameter_share"] < 1
    assert type(quantized.features[0][0]) is nn.Conv2d
    assert type(quantized.classifier[0]).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
    # its state dict packs each Linear's weight and bias in a tuple beside a dtype: sizes count the int8 weights
    fp32, int8 = serialized_size(model), serialized_size(quantized)
    linear_weights = model.classifier[0].weight.numel() + model.classifier[3].weight.numel()
    assert fp32["bytes"] - int8["bytes"] > 2.5 * linear_weights  # 4 bytes a weight became 1
    assert int8["gzip_bytes"] < fp32["gzip_bytes"]


@pytest.mark.parametrize("observer", ["minmax", "moving_average"])
def test_other_observers_and_the_x86_quantizer_give_int8_graphs(observer):
    model = TinyNet(width=16).eval()
    graph = quantize_pt2e_static(model, torch.zeros(1, 1, 28, 28), calibration(), observer=observer)
    assert int8_weight_share(graph) > 0.99
    server = quantize_pt2e_static(model, torch.zeros(1, 1, 28, 28), calibration(), backend="x86")
    assert int8_weight_share(server) > 0.5  # x86 leaves the final Linear in fp32 by design
    images = torch.randn(1, 1, 28, 28)  # the exported graph has the example's static batch size
    assert sqnr(model(images), graph(images)) > 15


def test_unknown_quantizer_backend_or_observer_is_a_clear_error():
    with pytest.raises(UdaciSenseError, match="unknown quantization backend 'tflite'"):
        make_quantizer("tflite")
    with pytest.raises(UdaciSenseError, match="observer"):
        validate_config(QuantizeConfig, {"observer": "percentile"}, where="quantization options")
    with pytest.raises(UdaciSenseError, match="not layers of this model"):
        quantize_pt2e_static(TinyNet(), torch.zeros(1, 1, 28, 28), calibration(), protect=("nope",))


# --- low-rank -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [nn.Linear(64, 96), nn.Conv2d(48, 80, 1, stride=2)], ids=["linear", "conv1x1"])
def test_svd_at_full_rank_reproduces_the_layer(layer):
    torch.manual_seed(0)
    inputs = torch.randn(4, 64) if isinstance(layer, nn.Linear) else torch.randn(2, 48, 6, 6)
    full = factorize_layer(layer, min(layer.weight.shape[:2]))
    assert (full(inputs) - layer(inputs)).abs().max().item() <= 1e-4


def test_reduced_rank_cuts_parameters_by_the_computed_amount_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", num_classes=10, in_channels=1).eval()
    before = sum(p.numel() for p in model.parameters())
    report = factorize(model, LowRankConfig(param_ratio=0.25, layers=("classifier.0",)))
    rank = int(0.25 * 576 * 1024 / (576 + 1024))
    assert report["factorized"]["classifier.0"]["rank"] == rank
    assert before - sum(p.numel() for p in model.parameters()) == 576 * 1024 - rank * (576 + 1024)
    spec = {"name": "mobilenet_v3_small", "kwargs": {"num_classes": 10, "in_channels": 1}}
    save_checkpoint(tmp_path / "lowrank.pt", model, spec, {"shape": [1, 1, 28, 28]})  # the new layers are recorded generically
    reloaded, _ = load_model(tmp_path / "lowrank.pt")
    images = torch.randn(3, 1, 28, 28)
    assert torch.equal(reloaded(images), model(images))


def test_factorizing_skips_layers_where_it_would_not_save_and_says_why():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    report = factorize(model, LowRankConfig(energy=1.0))
    assert report["factorized"] == {} and "would not save parameters" in report["skipped"]["1"]
    with pytest.raises(UdaciSenseError, match="not Linear or a 1x1"):
        factorize(TinyNet(), LowRankConfig(layers=("features.0",)))
    with pytest.raises(UdaciSenseError, match="either energy or param_ratio"):
        validate_config(LowRankConfig, {"energy": 0.9, "param_ratio": 0.5}, where="factorization options")
