"""Quantization: dynamic int8 (torch.ao, for comparison), static post-training int8 and
quantization-aware training through PT2E (torch.export -> prepare -> calibrate or train -> convert).

The XNNPACK quantizer gives per-channel symmetric int8 weights and per-tensor int8
activations: the layout ExecuTorch's XNNPACK delegate runs as real int8 kernels. Layers named
in ``protect`` stay fp32 (mixed precision, see :mod:`udacisense.techniques.mixed_precision`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator, Literal

import torch
import torch.nn as nn
from pydantic import Field

from udacisense.config import StrictModel
from udacisense.errors import UdaciSenseError
from udacisense.upstream import hush_kernel_preference_notice

hush_kernel_preference_notice()  # torchao's import-time notice (see upstream.py), before anything imports torchao

Observer = Literal["histogram", "minmax", "moving_average"]
BACKENDS = ("xnnpack", "x86")
TORCHAO_QAT_BATCHNORM_EPS = 1e-5  # the eps of torchao's QAT conv-BatchNorm patterns (see _move_batchnorm_eps_to_variance)


class QuantizeConfig(StrictModel):
    """How to quantize: method, target backend, activation observer, calibration size, float layers."""

    method: Literal["dynamic", "static", "qat"] = Field(default="static", description="static: calibrated int8; qat: quantization-aware "
                                                          "training (with --epochs); dynamic: int8 weights, float activations (.ptl)")
    backend: Literal["xnnpack", "x86"] = Field(default="xnnpack", description="quantizer backend (x86 from Python only)")
    observer: Observer = Field(default="histogram", description="activation range observer for static calibration")
    per_channel: bool = Field(default=True, description="one weight scale per output channel (else per tensor)")
    calibration_images: int = Field(default=256, gt=0, description="images that set the activation ranges")
    protect: tuple[str, ...] = Field(default=(), description="layers never quantized: left in fp32 (mixed precision)")
    freeze_batchnorm_epoch: int | None = Field(default=None, ge=1, description="QAT: BatchNorm statistics fixed from this epoch")
    freeze_observer_epoch: int | None = Field(default=None, ge=1, description="QAT: quantization ranges fixed from this epoch")


def _observer_class(name: str):
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    observers = {"histogram": HistogramObserver, "minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver}
    if name not in observers:
        raise UdaciSenseError(f"unknown observer '{name}'; choose one of {', '.join(observers)}")
    return observers[name]


def make_quantizer(
    backend: str = "xnnpack",
    per_channel: bool = True,
    observer: str = "histogram",
    qat: bool = False,
    protect: Iterable[str] = (),
):
    """A PT2E quantizer for ``backend`` ('xnnpack' for phones, 'x86' for server CPUs); layers in ``protect`` stay fp32."""
    protect = tuple(protect)
    if backend == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_module_name_filter,
            get_symmetric_quantization_config,
        )

        config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
        if not qat and observer != "histogram":  # the XNNPACK default for static activations is a histogram
            activation = config.input_activation
            spec = dataclasses.replace(activation, observer_or_fake_quant_ctr=_observer_class(observer).with_args(eps=2**-12))
            config = dataclasses.replace(config, input_activation=spec, output_activation=spec)
        quantizer = XNNPACKQuantizer().set_global(config)
        if protect:  # the quantizer cannot un-set a module, but it can skip nodes a filter rejects
            in_float_layer = [get_module_name_filter(name) for name in protect]
            quantizer.set_filter_function(lambda node: not any(test(node) for test in in_float_layer))
        return quantizer
    if backend == "x86":
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        if protect:
            raise UdaciSenseError("protect (fp32 layers, mixed precision) is supported for the xnnpack backend only")
        return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=qat))
    raise UdaciSenseError(f"unknown quantization backend '{backend}'; choose one of {', '.join(BACKENDS)} (xnnpack for phones)")


def quantize_pt2e_static(
    model: nn.Module,
    example: torch.Tensor,
    calibration_batches: Iterable[torch.Tensor],
    backend: str = "xnnpack",
    observer: str = "histogram",
    protect: Iterable[str] = (),
    per_channel: bool = True,
) -> torch.fx.GraphModule:
    """Return an int8 (quantize/dequantize-annotated) graph of ``model`` calibrated on the given batches; the layers
    in ``protect`` stay fp32.

    Every calibration batch must have ``example``'s shape: exported graphs have a static batch size.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    _check_layer_names(model, protect)  # before the export, which takes seconds
    quantizer = make_quantizer(backend, per_channel, observer, protect=protect)
    graph = torch.export.export(model.eval(), (example,)).module()
    with _only_matchable_conv_bn_patterns(graph):
        prepared = prepare_pt2e(graph, quantizer)
    calibrate(prepared, example, calibration_batches)
    return allow_train_eval(convert_pt2e(prepared))


def calibrate(prepared: torch.fx.GraphModule, example: torch.Tensor, calibration_batches: Iterable[torch.Tensor]) -> int:
    """Run a PT2E-prepared graph on the calibration batches, so its observers see the activations; returns how many.
    Every batch must have ``example``'s shape (exported graphs have a static batch size), and there must be one."""
    seen = 0
    with torch.no_grad():
        for batch in calibration_batches:
            if tuple(batch.shape) != tuple(example.shape):
                raise UdaciSenseError(
                    f"calibration batch {tuple(batch.shape)} differs from the exported shape {tuple(example.shape)}"
                )
            prepared(batch)
            seen += 1
    if seen == 0:
        raise UdaciSenseError("static quantization needs at least one calibration batch")
    return seen


def prepare_qat(
    model: nn.Module, example: torch.Tensor, backend: str = "xnnpack", protect: Iterable[str] = ()
) -> torch.fx.GraphModule:
    """A trainable graph of ``model`` with fake quantization (and Conv-BN folding simulated) inserted; the layers in
    ``protect`` stay fp32.

    The batch dimension stays dynamic so training batches of any size (>= 2) pass through;
    ``.train()`` and ``.eval()`` switch BatchNorm and dropout as on the eager model.
    """
    from torch.export import Dim
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    _check_layer_names(model, protect)
    model = copy.deepcopy(model)  # exported graphs share parameters with their source; training must not touch it
    _move_batchnorm_eps_to_variance(model)
    batch = Dim("batch", min=2, max=65536)
    example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    graph = torch.export.export(model.train(), (example,), dynamic_shapes=({0: batch},)).module()
    with _only_matchable_conv_bn_patterns(graph):
        prepared = prepare_qat_pt2e(graph, make_quantizer(backend, qat=True, protect=protect))
    return allow_train_eval(prepared)


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold the trained fake-quantized graph into a real int8 (quantize/dequantize) graph."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()
    with _only_matchable_conv_bn_patterns(prepared):
        converted = convert_pt2e(prepared)
    _drop_unused_buffers(converted)
    return allow_train_eval(converted)


@contextmanager
def _only_matchable_conv_bn_patterns(graph: torch.fx.GraphModule) -> Iterator[None]:
    """torchao fuses (in QAT preparation) and folds (in conversion) BatchNorm with conv1d, conv2d, conv_transpose1d and
    conv_transpose2d in turn, and the XNNPACK quantizer annotates conv-BatchNorm pairs in every preparation, static or QAT;
    each exports pattern graphs with torch.export for every kind, whatever the model (3 per kind to fuse, 24 to fold, 3 to
    annotate). A pattern cannot match without its operators: skip the kinds of convolution the graph does not contain,
    and the annotators where the graph being annotated has no BatchNorm (static preparation has folded it into the
    convolutions by then). Measured, with the same nodes and bit-identical outputs: conversion of TinyNet 19.3 -> 4.5 s
    and of MobileNetV3-Small (width 0.5) 24.3 -> 9.0 s (2 threads); QAT preparation of MobileNetV3-Small 9.6 -> 4.9 s,
    static preparation of TinyNet 2.0 -> 0.13 s and of MobileNetV3-Small 4.4 -> 1.6 s (1 thread). A torchao or
    ExecuTorch without one of these helpers runs that step the slow way."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import OP_TO_ANNOTATOR
    from torchao.quantization.pt2e import qat_utils

    def operators(module: torch.fx.GraphModule) -> set[str]:
        return {getattr(node.target, "_opname", "") for node in module.graph.nodes if node.op == "call_function"}

    present = operators(graph)

    def only_if_present(helper):
        def run(module: torch.fx.GraphModule, conv_fn, *args, **kwargs) -> torch.fx.GraphModule:
            return helper(module, conv_fn, *args, **kwargs) if conv_fn.__name__ in present else module

        return run

    def only_if_matchable(annotator, convolutions: set[str]):
        def run(module: torch.fx.GraphModule, *args, **kwargs):
            found = operators(module)
            return annotator(module, *args, **kwargs) if found & convolutions and any("batch_norm" in op for op in found) else []

        return run

    helpers = {name: helper for name in ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper") if (helper := getattr(qat_utils, name, None))}
    plain, transposed = {"conv1d", "conv2d"}, {"conv_transpose1d", "conv_transpose2d"}
    kinds = {"conv_bn": plain, "conv_bn_relu": plain, "conv_transpose_bn": transposed, "conv_transpose_bn_relu": transposed}
    annotators = {name: OP_TO_ANNOTATOR[name] for name in kinds if name in OP_TO_ANNOTATOR}
    for name, helper in helpers.items():
        setattr(qat_utils, name, only_if_present(helper))
    OP_TO_ANNOTATOR.update({name: only_if_matchable(annotator, kinds[name]) for name, annotator in annotators.items()})
    try:
        yield
    finally:
        for name, helper in helpers.items():
            setattr(qat_utils, name, helper)
        OP_TO_ANNOTATOR.update(annotators)


def _drop_unused_buffers(graph: torch.fx.GraphModule) -> None:
    """Delete buffers no node reads. Converting folds BatchNorm into the convolutions but keeps its running statistics
    as buffers, and ExecuTorch serializes every buffer as program state: 17.6 KB more in a pruned MobileNetV3-Small's
    int8 ``.pte`` (0.371 instead of 0.348 MB) than the same model quantized statically."""
    read = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in list(graph.named_buffers()):
        if name not in read:
            owner, _, attribute = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attribute)


def freeze_qat(prepared: torch.fx.GraphModule, batchnorm: bool = False, observers: bool = False) -> None:
    """Late in QAT: fix BatchNorm running statistics and/or the quantization ranges (observers)."""
    from torchao.quantization.pt2e import disable_observer

    if observers:
        prepared.apply(disable_observer)
    if batchnorm:
        prepared._batchnorm_frozen = True
        _set_graph_mode(prepared, getattr(prepared, "_udacisense_training", True))


def allow_train_eval(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make ``graph.train()``/``graph.eval()`` switch BatchNorm and dropout by flipping their
    ``training`` arguments in place.

    torchao's own switch (``move_exported_model_to_eval``) rewrites BatchNorm by pattern replacement; flipping the argument
    keeps every node as prepared and touches nothing else.
    """

    def train(self, mode: bool = True):
        _set_graph_mode(self, mode)
        return self

    graph.train = types.MethodType(train, graph)
    graph.eval = types.MethodType(lambda self: train(self, False), graph)
    return graph


def _set_graph_mode(graph: torch.fx.GraphModule, training: bool) -> None:
    graph._udacisense_training = training
    batchnorm_training = training and not getattr(graph, "_batchnorm_frozen", False)
    for node in graph.graph.nodes:
        if node.target is torch.ops.aten.batch_norm.default:
            node.update_arg(5, batchnorm_training)
        elif node.target in (torch.ops.aten.dropout.default, torch.ops.aten.dropout_.default):
            node.update_arg(2, training)
    graph.recompile()


def _move_batchnorm_eps_to_variance(model: nn.Module) -> None:
    """Give every BatchNorm torchao's QAT eps (1e-5) and add the difference to its running variance instead.

    torchao's QAT conv-BN patterns hard-code eps = 1e-5: training scales the weights by gamma / sqrt(var + 1e-5), and
    conversion folds with 1e-5 whatever eps the layer had. MobileNetV3 uses 1e-3, so keeping the model's eps in the
    fake-quantized graph made it compute something the converted file does not: wherever a channel's running variance is
    small next to 1e-3 the two differ by up to sqrt(1e-3 / 1e-5) = 10x, and a MobileNetV3-Small trained briefly on a
    small data set (many such channels) lost 30 points in conversion. ``var + eps`` is unchanged, so in eval mode every
    layer computes exactly what it did, and training, fake quantization and conversion all use the same eps.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.running_var is not None:
            with torch.no_grad():
                module.running_var.add_(module.eps - TORCHAO_QAT_BATCHNORM_EPS)
            module.eps = TORCHAO_QAT_BATCHNORM_EPS


def _check_layer_names(model: nn.Module, names: Iterable[str]) -> None:
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise UdaciSenseError(f"protect (fp32 layers) names {', '.join(unknown)}, not layers of this model; see 'udacisense profile'")


def quantize_dynamic(model: nn.Module) -> tuple[nn.Module, dict[str, object]]:
    """torch.ao dynamic int8 (the seed project's method): Linear weights int8, activations quantized on the fly.

    Convolutions are untouched, so on a CNN only the classifier shrinks; the report says which
    layers changed and what share of the parameters that is.
    """
    import torch.ao.quantization as ao_quantization

    linear = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    total = sum(p.numel() for p in model.parameters())
    covered = sum(module.weight.numel() for module in linear.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its own deprecation
        quantized = ao_quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
    report = {
        "quantized_layers": list(linear),
        "quantized_parameter_share": covered / max(total, 1),
        "note": "dynamic quantization only converts Linear layers; Conv2d layers stay fp32",
    }
    return quantized, report


def int8_weight_share(graph: torch.fx.GraphModule) -> float:
    """Share of the graph's stored weight elements (params and constants) held as int8."""
    names = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    tensors = [functools.reduce(getattr, name.split("."), graph) for name in names]
    tensors = [tensor for tensor in tensors if isinstance(tensor, torch.Tensor)]
    weights = [tensor for tensor in tensors if tensor.ndim >= 2]
    total = sum(tensor.numel() for tensor in weights)
    return sum(tensor.numel() for tensor in weights if tensor.dtype == torch.int8) / max(total, 1)
