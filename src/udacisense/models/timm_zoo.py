"""EfficientNet-Lite and MobileViT from timm (pinned; built from their configurations, never with downloaded weights),
adapted to 28-32 px inputs as the MobileNetV3s are: a stride-1 stem, so that the last feature map keeps 2x2 of a
28-32 px image instead of vanishing at the ImageNet stride of 32.

MobileViT unfolds its feature maps into 2x2 patches at strides 4, 8 and 16; an odd map (7x7 of a 28 px image) would
be resized by bilinear interpolation inside every MobileViT block. Its models pad the input with zeros to a multiple
of 32 px instead (28 px: 2 px on each side), once, before the stem: the image is unchanged, only framed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from udacisense.models.registry import register_model

MOBILEVIT_INPUT_MULTIPLE = 32  # the deepest MobileViT block sees the input at stride 16 and cuts it into 2x2 patches


def _explicit_attention(model: nn.Module) -> None:
    """Attention as its matrix products and softmax instead of one scaled_dot_product_attention call: the same
    arithmetic, but the exported graph of SDPA guards fully masked rows with any/eq/where operators that XNNPACK does
    not delegate (MobileViT-XXS at 1 thread: 1.45 ms with 28% of it outside the delegate; explicit: 1.25 ms, 20%)."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


def _stride_one_stem(conv: nn.Conv2d) -> None:
    """Make the stem convolution stride 1 (its padding already keeps the size at stride 1: 3x3 with padding 1)."""
    conv.stride = (1, 1)


class PaddedToMultiple(nn.Module):
    """Zero-pads the input's height and width up to a multiple of ``multiple`` (centred), then runs ``model``."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        extra_h = math.ceil(height / self.multiple) * self.multiple - height
        extra_w = math.ceil(width / self.multiple) * self.multiple - width
        if extra_h or extra_w:
            images = F.pad(images, (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2))
        return self.model(images)


@register_model("efficientnet_lite0", student=True, width_mult=True)
def efficientnet_lite0(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """EfficientNet-Lite0 (timm), stride-1 stem: about 3.4 M parameters at 10 classes; ``width_mult`` is the family's
    channel multiplier (timm's Lite2 uses 1.1, Lite4 1.4; below 1 for a narrower student)."""
    from timm.models.efficientnet import _gen_efficientnet_lite  # the family's builder: timm's lite0 fixes its multiplier to 1.0

    model = _gen_efficientnet_lite("efficientnet_lite0", channel_multiplier=width_mult, num_classes=num_classes, in_chans=in_channels,
                                   drop_rate=dropout)
    _stride_one_stem(model.conv_stem)
    return model


@register_model("mobilevit_xxs", student=True)
def mobilevit_xxs(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """MobileViT-XXS (timm), stride-1 stem, input zero-padded to a multiple of 32 px: about 0.95 M parameters at 10
    classes. The family has no width multiplier (XXS, XS and S are separate configurations)."""
    import timm

    model = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=num_classes, in_chans=in_channels)
    _stride_one_stem(model.stem.conv)
    _explicit_attention(model)
    return PaddedToMultiple(model, MOBILEVIT_INPUT_MULTIPLE)


@register_model("mobilevitv2_050", student=True, width_mult=True)
def mobilevitv2_050(num_classes: int = 10, in_channels: int = 1, width_mult: float = 0.5) -> nn.Module:
    """MobileViTv2 (timm's mobilevitv2_050 at ``width_mult`` 0.5; 0.75 and 1.0 are its _075 and _100), stride-1 stem,
    input zero-padded to a multiple of 32 px: about 1.1 M parameters at 10 classes and width 0.5."""
    from timm.models.byobnet import ByobNet
    from timm.models.mobilevit import _mobilevitv2_cfg

    model = ByobNet(_mobilevitv2_cfg(width_mult), num_classes=num_classes, in_chans=in_channels)
    _stride_one_stem(model.stem.conv)
    _explicit_attention(model)
    return PaddedToMultiple(model, MOBILEVIT_INPUT_MULTIPLE)
