"""Distillation, unstructured and channel pruning, sensitivity: real effects, measured."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TinyNet
from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.config import DataConfig, DistillConfig, TrainConfig, validate_config
from udacisense.data import dataset_for_contract, get_dataset
from udacisense.distillation import distillation_loss, make_distillation_loss
from udacisense.errors import UdaciSenseError
from udacisense.models import create_model
from udacisense.profile import count_macs, serialized_size
from udacisense.techniques.channels import ChannelPruneConfig, prune_channels, pruning_steps
from udacisense.techniques.prune import (
    UnstructuredPruneConfig,
    cubic_sparsity,
    prunable_layers,
    prune_unstructured,
    pruning_hooks,
    weight_sparsity,
)
from udacisense.techniques.sensitivity import layer_sensitivity, plan_layer_ratios, save_sensitivity
from udacisense.train import fine_tune

SPEC = {"name": "mobilenet_v3_small", "kwargs": {"num_classes": 10, "in_channels": 1}}
CONTRACT = {"shape": [1, 1, 28, 28]}


def mean_kl(teacher, student, images: torch.Tensor) -> float:
    with torch.no_grad():
        return F.kl_div(F.log_softmax(student(images), 1), F.log_softmax(teacher(images), 1), reduction="batchmean", log_target=True).item()


# --- distillation ---------------------------------------------------------------------------


def test_distillation_loss_matches_hand_computation():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    temperature, alpha = 3.0, 0.6
    p_teacher = torch.softmax(teacher / temperature, 1)
    p_student = torch.softmax(student / temperature, 1)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean()
    cross_entropy = -torch.log_softmax(student, 1)[torch.arange(4), labels].mean()
    expected = alpha * kl * temperature**2 + (1 - alpha) * cross_entropy
    assert distillation_loss(student, teacher, labels, temperature, alpha).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(student, student, labels, temperature, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distilled_student_moves_toward_its_frozen_teacher(fashion_run, tmp_path):
    config, summary = fashion_run
    teacher, payload = load_model(f"{summary['run']}/best.pt")
    dataset = dataset_for_contract(payload["input"], root=config.data.root, test_subset=500, train_subset=1500)
    student = TinyNet(width=16)
    test_images = dataset.normalization.apply(dataset.test.images)
    kl_before = mean_kl(teacher, student, test_images)
    fine_tune(
        student, dataset, TrainConfig(epochs=2, batch_size=64, lr=0.05, threads=1), tmp_path,
        {"name": "tiny"}, teacher=teacher, distillation=DistillConfig(temperature=2.0, alpha=0.9),
    )
    kl_after = mean_kl(teacher, student.eval(), test_images)
    assert kl_after < 0.7 * kl_before
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_cached_teacher_logits_equal_fresh_ones_are_reused_and_need_augmentation_off(tmp_path):
    torch.manual_seed(0)
    teacher, images, labels = TinyNet(), torch.randn(6, 1, 28, 28), torch.arange(6)
    teacher_calls = []
    teacher.register_forward_hook(lambda module, inputs, output: teacher_calls.append(inputs[0].shape[0]))
    student_logits = torch.randn(6, 10)
    fresh = make_distillation_loss(teacher, DistillConfig())(student_logits, images, labels)
    assert teacher_calls == [6]
    cached_loss = make_distillation_loss(teacher, DistillConfig(cache_teacher_logits=True))
    first = cached_loss(student_logits, images, labels)
    again = cached_loss(student_logits[[5, 4, 3, 2, 1, 0]], images.flip(0), labels.flip(0))  # same images, another order
    assert teacher_calls == [6, 6]  # the second batch was answered from the cache: the teacher did not run again
    assert first.item() == pytest.approx(fresh.item(), rel=1e-6) and again.item() == pytest.approx(fresh.item(), rel=1e-6)
    partly_new = torch.cat([images[:2], torch.randn(3, 1, 28, 28)])
    cached_loss(torch.randn(5, 10), partly_new, labels[:5])
    assert teacher_calls == [6, 6, 3]  # only the three unseen images reach the teacher
    dataset = get_dataset(DataConfig(name="synthetic", train_subset=32))
    with pytest.raises(UdaciSenseError, match="augmentation off"):
        fine_tune(TinyNet(), dataset, TrainConfig(epochs=1), tmp_path, {"name": "tiny"}, teacher=teacher,
                  distillation=DistillConfig(cache_teacher_logits=True), augment=("crop",))


# --- unstructured pruning -------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_hits_the_exact_sparsity_and_shrinks_gzip(fashion_run, scope):
    _, summary = fashion_run
    model, _ = load_model(f"{summary['run']}/best.pt")
    gzip_before = serialized_size(model)["gzip_bytes"]
    masks = prune_unstructured(model, 0.5, scope)
    layers = prunable_layers(model)
    if scope == "global":
        total = sum(module.weight.numel() for module in layers.values())
        zeros = sum(int((module.weight == 0).sum()) for module in layers.values())
        assert zeros == round(0.5 * total)
    else:
        for module in layers.values():
            assert int((module.weight == 0).sum()) == round(0.5 * module.weight.numel())
    assert all(not hasattr(module, "weight_mask") for module in layers.values())  # made permanent
    assert set(masks) == set(layers)
    assert serialized_size(model)["gzip_bytes"] < 0.8 * gzip_before
    assert set(model.state_dict()) == set(create_model("mobilenet_v3_small").state_dict())  # plain keys, no masks


def test_gradual_pruning_follows_the_cubic_schedule_and_keeps_zeros_through_fine_tuning(tmp_path):
    assert cubic_sparsity(0, 4, 0.8) == 0.0 and cubic_sparsity(4, 4, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(1, 4, 0.8) == pytest.approx(0.8 * (1 - 0.75**3))
    torch.manual_seed(0)
    model = TinyNet(width=16)
    dataset = get_dataset(DataConfig(name="synthetic", val_fraction=0.1))
    seen = []
    raise_sparsity, keep_zeros = pruning_hooks(model, UnstructuredPruneConfig(ratio=0.8, schedule="gradual"), epochs=4)
    fine_tune(
        model, dataset, TrainConfig(epochs=4, batch_size=32, lr=0.05), tmp_path, {"name": "tiny"},
        on_epoch_start=raise_sparsity, on_step_end=keep_zeros, on_epoch_end=lambda result: seen.append(weight_sparsity(model)),
    )
    keep_zeros()
    assert seen == sorted(seen) and seen[0] < 0.8 - 0.05  # sparsity rose epoch by epoch, never fell
    assert weight_sparsity(model) == pytest.approx(0.8, abs=1e-3)  # and zeros survived the optimizer steps


# --- structured (channel) pruning -----------------------------------------------------------


@pytest.mark.parametrize(
    "build, input_shape",
    [
        (lambda: create_model("mobilenet_v3_small", num_classes=10, in_channels=1), (1, 1, 28, 28)),
        (lambda: create_model("resnet18", num_classes=10, in_channels=3), (1, 3, 32, 32)),
        (lambda: TinyNet(width=32), (1, 1, 28, 28)),
    ],
    ids=["mobilenet_v3_small", "resnet18", "user_tinynet"],
)
def test_half_the_channels_really_cuts_macs_and_size_reloads_and_exports(build, input_shape, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    macs_before, size_before = count_macs(model, input_shape)[0], serialized_size(model)["bytes"]
    prune_channels(model, torch.zeros(input_shape), ChannelPruneConfig(ratio=0.5))
    macs_after, size_after = count_macs(model, input_shape)[0], serialized_size(model)["bytes"]
    assert macs_after <= 0.6 * macs_before
    assert size_after <= 0.6 * size_before
    images = torch.randn(3, *input_shape[1:])
    outputs = model(images)
    assert outputs.shape == (3, 10) and torch.isfinite(outputs).all()

    if isinstance(model, TinyNet):  # reloading a user model from a checkpoint goes through its file; rebuild directly
        from udacisense.checkpoint import apply_structure, layer_structure

        state = model.state_dict()
        reloaded = apply_structure(TinyNet(width=32), layer_structure(model), state)
        reloaded.load_state_dict(state)
    else:
        spec = {"name": "mobilenet_v3_small" if input_shape[1] == 1 else "resnet18",
                "kwargs": {"num_classes": 10, "in_channels": input_shape[1]}}
        save_checkpoint(tmp_path / "pruned.pt", model, spec, {"shape": list(input_shape)})
        reloaded, _ = load_model(tmp_path / "pruned.pt")
    assert torch.equal(reloaded.eval()(images), outputs)
    exported = torch.export.export(model, (torch.zeros(input_shape),))
    assert torch.allclose(exported.module()(images[:1]), outputs[:1], atol=1e-5)


def test_channel_counts_are_multiples_of_eight_and_the_classifier_keeps_its_classes():
    model = create_model("mobilenet_v3_small", num_classes=10, in_channels=1)
    prune_channels(model, torch.zeros(1, 1, 28, 28), ChannelPruneConfig(ratio=0.5, importance="bn"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 8]
    assert convs and all(conv.out_channels % 8 == 0 for conv in convs)
    assert model.classifier[-1].out_features == 10


def test_iterative_and_global_pruning_reach_the_requested_width(tmp_path):
    stepped = prune_channels(TinyNet(width=32), torch.zeros(1, 1, 28, 28), ChannelPruneConfig(ratio=0.5, steps=2))
    assert stepped.features[0].out_channels == 16 and stepped.features[4].out_channels == 32
    globally = prune_channels(TinyNet(width=32), torch.zeros(1, 1, 28, 28), ChannelPruneConfig(ratio=0.5, scope="global"))
    kept = globally.features[0].out_channels + globally.features[4].out_channels
    assert kept <= 0.5 * (32 + 64) + 8 and globally.classifier.out_features == 10

    model = TinyNet(width=32)
    dataset = get_dataset(DataConfig(name="synthetic"))
    widths, history = [], []
    for step in pruning_steps(model, torch.zeros(1, 1, 28, 28), ChannelPruneConfig(ratio=0.5, steps=2)):
        widths.append(model.features[0].out_channels)
        history += fine_tune(model, dataset, TrainConfig(epochs=1, batch_size=32, lr=0.05), tmp_path / f"step{step}", {"name": "tiny"})
    assert widths == [24, 16]  # half the channels in two steps, each fine-tuned
    assert len(history) == 2 and (tmp_path / "step1" / "last.pt").exists() and (tmp_path / "step2" / "last.pt").exists()
    assert model.features[0].out_channels == 16


def test_taylor_importance_ranks_by_gradient_where_l1_ranks_by_size():
    """A constructed case: in features.0, the 16 largest filters feed nothing (their weights into features.4 are zero),
    so they cannot change the loss. L1 keeps them; Taylor (|weight x gradient|) removes them."""
    def constructed() -> TinyNet:
        torch.manual_seed(0)
        model = TinyNet(width=32).eval()
        with torch.no_grad():
            model.features[0].weight[:16] *= 10  # big but useless
            model.features[4].weight[:, :16] = 0  # nothing downstream reads channels 0-15
        return model

    batches = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))]
    example = torch.zeros(1, 1, 28, 28)
    with pytest.raises(UdaciSenseError, match="taylor importance needs"):
        prune_channels(constructed(), example, ChannelPruneConfig(ratio=0.5, importance="taylor"))
    kept = {}
    for importance in ("l1", "taylor"):
        model = constructed()
        big_filters = model.features[0].weight[:16].detach().clone()
        prune_channels(model, example, ChannelPruneConfig(ratio=0.5, importance=importance, round_to=None), batches)
        assert model.features[0].out_channels == 16
        kept[importance] = any(torch.equal(row, big) for row in model.features[0].weight for big in big_filters)
        assert all(p.grad is None for p in model.parameters())
    assert kept == {"l1": True, "taylor": False}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": 0.5, "layer_ratios": {"features.0": 1.5}}, "layer ratios must be in"),
        ({"ratio": 0.5, "importance": "random"}, "importance"),
    ],
)
def test_bad_channel_pruning_options_are_clear_errors(raw, message):
    with pytest.raises(UdaciSenseError, match=message):
        validate_config(ChannelPruneConfig, raw, where="channel pruning options")


@pytest.mark.parametrize(
    "layer_ratios, message",
    [
        ({"classifier": 0.5}, "cannot be pruned: it is protected"),
        ({"features.1": 0.5}, "only Conv2d and Linear"),
        ({"no.such.layer": 0.5}, "is not in the model"),
    ],
)
def test_pruning_a_layer_that_cannot_be_pruned_is_a_clear_error(layer_ratios, message):
    with pytest.raises(UdaciSenseError, match=message):
        prune_channels(TinyNet(width=32), torch.zeros(1, 1, 28, 28), ChannelPruneConfig(ratio=0.0, layer_ratios=layer_ratios))


def test_bad_unstructured_options_are_clear_errors():
    with pytest.raises(UdaciSenseError, match="'ratio': Input should be less than 1"):
        validate_config(UnstructuredPruneConfig, {"ratio": 1.0}, where="unstructured pruning options")
    with pytest.raises(UdaciSenseError, match="cannot protect features.1"):
        prune_unstructured(TinyNet(), 0.5, protect=("features.1",))


# --- sensitivity ----------------------------------------------------------------------------


def test_sensitivity_measures_each_layer_and_the_plan_meets_its_macs_target(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(width=32).eval()
    example = torch.zeros(1, 1, 28, 28)
    batches = [(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))]
    result = layer_sensitivity(model, example, batches, [str(i) for i in range(10)], ratios=(0.25, 0.5, 0.75))
    assert list(result["layers"]) == ["features.0", "features.4"]  # the classifier output is never a candidate
    for rows in result["layers"].values():
        macs = [row["macs"] for row in rows]
        assert macs == sorted(macs, reverse=True) and macs[-1] < result["baseline"]["macs"]
    plan = plan_layer_ratios(model, example, result, {"macs": 0.5})
    assert plan["met"] and plan["achieved"]["macs"] <= 0.5
    # a plan for Taylor importance needs no gradients: it only counts what a cut costs (the search found this)
    assert plan_layer_ratios(model, example, result, {"macs": 0.5}, importance="taylor")["layer_ratios"] == plan["layer_ratios"]
    pruned = prune_channels(model, example, ChannelPruneConfig(ratio=0.0, layer_ratios=plan["layer_ratios"]))
    assert count_macs(pruned, (1, 1, 28, 28))[0] <= 0.5 * result["baseline"]["macs"]
    paths = save_sensitivity(result, tmp_path)
    assert json.loads(paths["json"].read_text())["ratios"] == [0.25, 0.5, 0.75]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
