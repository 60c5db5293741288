"""ResNet-18 with the small-input (CIFAR-style) stem: 3x3 stride-1 conv and no max-pool."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn

from udacisense.models.registry import register_model

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """ResNet-18 for 28-32 px inputs (about 11.2 M parameters)."""
    from torchvision.models.resnet import BasicBlock, ResNet  # imported here, as in mobilenet.py

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
