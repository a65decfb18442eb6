# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of DS-MobileNetV1 as a plain torch network.

Every layer is built at the sub-network's widths with the sliced weights
copied in and the sub-network's BN statistics folded into the convolutions,
so the result needs neither dsnet_mm nor mmpretrain to run, and it is the
limit the slice path should reach in speed.
"""
import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d, DSConv2d


def fold_conv_bn(conv: DSConv2d, bn: DSBatchNorm2d, c_in: int, c_out: int,
                 row: int) -> nn.Conv2d:
    """``nn.Conv2d`` at ``(c_in, c_out)`` with BN row ``row`` folded in."""
    groups = conv.groups_for(c_in)
    weight = conv.weight[:c_out, :c_in // groups].detach()
    scale = bn.weight[:c_out].detach() * torch.rsqrt(
        bn.running_var[row, :c_out] + bn.eps)
    static = nn.Conv2d(c_in, c_out, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, groups, bias=True)
    with torch.no_grad():
        static.weight.copy_(weight * scale[:, None, None, None])
        static.bias.copy_(bn.bias[:c_out].detach() -
                          bn.running_mean[row, :c_out] * scale)
    return static


def _sliced_conv(conv: DSConv2d, c_in: int, c_out: int) -> nn.Conv2d:
    static = nn.Conv2d(c_in, c_out, 1, bias=True)
    with torch.no_grad():
        static.weight.copy_(conv.weight[:c_out, :c_in])
        static.bias.copy_(conv.bias[:c_out])
    return static


class StaticSqueezeExcite(nn.Module):
    """Plain SE: pooling, 1x1 reduce, ReLU, 1x1 expand, sigmoid scaling."""

    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = reduce
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act(self.conv_reduce(self.pool(x))))
        return x * scale.sigmoid()


class StaticMobileNetV1(nn.Module):
    """Features, global pooling and the linear classifier."""

    def __init__(self, features: nn.Sequential, fc: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def static_mobilenet_v1(model: nn.Module, spec: SubnetSpec
                        ) -> StaticMobileNetV1:
    """Build sub-network ``spec`` of a DS-MobileNetV1 classifier statically.

    Args:
        model (nn.Module): A classifier with a ``DSMobileNetV1`` backbone,
            a global-pooling neck and a ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network (its widths and BN row).

    Returns:
        StaticMobileNetV1: a plain torch network in eval mode.
    """
    bb = model.backbone
    width = spec['stem']
    layers = [fold_conv_bn(bb.stem.conv, bb.stem.bn, bb.in_channels, width,
                           spec.index), nn.SiLU(inplace=True)]
    for blocks in bb.layers:
        for b in blocks:
            out = spec[b.group]
            se = b.se
            layers += [
                fold_conv_bn(b.conv_dw, b.bn1, width, width, spec.index),
                nn.SiLU(inplace=True),
                StaticSqueezeExcite(
                    _sliced_conv(se.conv_reduce, width, se.reduce_channels),
                    _sliced_conv(se.conv_expand, se.reduce_channels, width)),
                fold_conv_bn(b.conv_pw, b.bn2, width, out, spec.index),
                nn.SiLU(inplace=True)
            ]
            width = out
    head = model.head.fc
    fc = nn.Linear(width, head.out_features)
    with torch.no_grad():
        fc.weight.copy_(head.weight[:, :width])
        fc.bias.copy_(head.bias)
    return StaticMobileNetV1(nn.Sequential(*layers), fc).eval()
