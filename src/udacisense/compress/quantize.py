"""Static post-training int8 quantization through PT2E (torch.export -> prepare -> calibrate -> convert).

The XNNPACK quantizer gives per-channel symmetric int8 weights and per-tensor int8
activations: the layout ExecuTorch's XNNPACK delegate runs as real int8 kernels.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError


def make_quantizer(backend: str = "xnnpack", per_channel: bool = True):
    """A PT2E quantizer for ``backend`` ('xnnpack' for phones, 'x86' for server CPUs)."""
    if backend == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    if backend == "x86":
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    raise UdaciSenseError(f"unknown quantization backend '{backend}'; choose 'xnnpack' (phones) or 'x86' (servers)")


def quantize_pt2e_static(
    model: nn.Module,
    example: torch.Tensor,
    calibration_batches: Iterable[torch.Tensor],
    backend: str = "xnnpack",
) -> torch.fx.GraphModule:
    """Return an int8 (quantize/dequantize-annotated) graph of ``model`` calibrated on the given batches.

    Every calibration batch must have ``example``'s shape: exported graphs have a static batch size.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(model.eval(), (example,)).module()
    prepared = prepare_pt2e(graph, make_quantizer(backend))
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
    return convert_pt2e(prepared)
