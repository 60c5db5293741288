"""MobileNetV3 Small/Large from torchvision with a stem for 28-32 px inputs.

torchvision's ImageNet stem downsamples 2x at once, so a 28 px image reaches the last block
at 1x1. A stride-1 stem keeps the last feature map at 2x2 for 28 px (total stride 16).
BatchNorm momentum is 0.1, not torchvision's 0.01: with 0.01 the running statistics of a
short training run are still near their initial values and eval-mode accuracy is chance.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch.nn as nn

from udacisense.models.registry import register_model

if TYPE_CHECKING:
    from torchvision.models.mobilenetv3 import MobileNetV3

BN_MOMENTUM = 0.1
BN_EPS = 1e-3


def build_mobilenet_v3(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 1,
    width_mult: float = 1.0,
    stem_stride: int = 1,
    dropout: float = 0.2,
) -> MobileNetV3:
    """torchvision's MobileNetV3 with ``in_channels`` inputs and a ``stem_stride`` first conv."""
    # imported here: torchvision takes over a second to import, which every fresh measuring process of a user's model would pay
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
    from torchvision.ops.misc import Conv2dNormActivation

    blocks, last_channel = _mobilenet_v3_conf(arch, width_mult=width_mult)
    norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
    model = MobileNetV3(blocks, last_channel, num_classes=num_classes, norm_layer=norm_layer, dropout=dropout)
    model.features[0] = Conv2dNormActivation(
        in_channels,
        blocks[0].input_channels,
        kernel_size=3,
        stride=stem_stride,
        norm_layer=norm_layer,
        activation_layer=nn.Hardswish,
    )
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model


@register_model("mobilenet_v3_small", student=True, width_mult=True)
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small, stride-1 stem (about 1.5 M parameters at 10 classes)."""
    return build_mobilenet_v3("mobilenet_v3_small", **kwargs)


@register_model("mobilenet_v3_large")
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large, stride-1 stem (about 4.2 M parameters at 10 classes)."""
    return build_mobilenet_v3("mobilenet_v3_large", **kwargs)
