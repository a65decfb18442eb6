# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of DS-MobileNetV1 as a plain torch network.

Every layer is built at the sub-network's widths with the sliced weights
copied in and the sub-network's BN statistics folded into the convolutions
(for export) or kept as ``nn.BatchNorm2d`` (the limit the slice path should
reach in speed), so the result needs neither dsnet_mm nor mmpretrain to run.
The walk over the architecture is shared with other layer builders, e.g. the
gather-indexing baseline of the benchmark.
"""
from typing import Optional

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLayerNorm, DSLinear,
                          DSQKVLinear)


def _static_conv(conv: DSConv2d, c_in: int, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], groups: int) -> nn.Conv2d:
    """``nn.Conv2d`` with ``conv``'s geometry holding copies of ``weight``
    and ``bias``."""
    k = weight.shape[-1]
    return _holding(
        nn.Conv2d(c_in, weight.shape[0], k, conv.stride, conv.padding_for(k),
                  conv.dilation, groups, bias=bias is not None), weight, bias)


def _holding(static: nn.Module, weight: torch.Tensor,
             bias: Optional[torch.Tensor]) -> nn.Module:
    """``static`` with copies of ``weight`` and ``bias`` in its own."""
    with torch.no_grad():
        static.weight.copy_(weight)
        if bias is not None:
            static.bias.copy_(bias)
    return static


def fold_conv_bn(conv: DSConv2d, bn: DSBatchNorm2d, c_in: int, c_out: int,
                 row: int, kernel: Optional[int] = None) -> nn.Conv2d:
    """``nn.Conv2d`` at ``(c_in, c_out)`` and ``kernel`` with BN row ``row``
    folded in."""
    return _static_conv(conv, c_in, *conv.folded(
        c_in, c_out, bn, row, kernel_size=kernel))


def _copied_conv(conv: DSConv2d, c_in: int, c_out: int,
                 kernel: Optional[int] = None) -> nn.Conv2d:
    """``nn.Conv2d`` at ``(c_in, c_out)`` and ``kernel`` holding a copy of
    the slice."""
    return _static_conv(conv, c_in, *conv.sliced(c_in, c_out,
                                                 kernel_size=kernel))


def _copied_bn(bn: DSBatchNorm2d, c: int, row: int) -> nn.BatchNorm2d:
    static = nn.BatchNorm2d(c, bn.eps)
    with torch.no_grad():
        static.weight.copy_(bn.weight[:c])
        static.bias.copy_(bn.bias[:c])
        static.running_mean.copy_(bn.running_mean[row, :c])
        static.running_var.copy_(bn.running_var[row, :c])
    return static


class StaticLayers:
    """Builds each layer of a sub-network as a plain torch layer with a copy
    of its sliced weights.

    Args:
        fold_bn (bool): Fold each BN into its conv (deployment), or keep
            ``nn.BatchNorm2d`` layers, which run the very operations of the
            slice path (the fair speed limit of slicing). Defaults to True.
    """

    def __init__(self, fold_bn: bool = True) -> None:
        self.fold_bn = fold_bn

    def conv_bn(self, conv: DSConv2d, bn: DSBatchNorm2d, c_in: int,
                c_out: int, row: int,
                kernel: Optional[int] = None) -> nn.Module:
        if self.fold_bn:
            return fold_conv_bn(conv, bn, c_in, c_out, row, kernel)
        return nn.Sequential(
            _copied_conv(conv, c_in, c_out, kernel),
            _copied_bn(bn, c_out, row))

    def conv(self, conv: DSConv2d, c_in: int, c_out: int) -> nn.Module:
        return _copied_conv(conv, c_in, c_out)

    def linear(self, fc: nn.Module, c_in: int) -> nn.Module:
        """A classifier reading the first ``c_in`` inputs."""
        return _copied_linear(fc.weight[:, :c_in], fc.bias)

    def sliced_linear(self, fc: DSLinear, c_in: int,
                      c_out: int) -> nn.Linear:
        return _copied_linear(*fc._sliced(c_in, c_out))

    def qkv(self, qkv: DSQKVLinear, d: int, heads: int) -> nn.Linear:
        """q, k and v of ``heads`` heads from ``d`` inputs, one matmul."""
        return _copied_linear(*qkv._merged(d, heads))

    def layer_norm(self, ln: DSLayerNorm, d: int) -> nn.LayerNorm:
        return _holding(nn.LayerNorm(d, eps=ln.eps), ln.weight[:d],
                        ln.bias[:d])


def _copied_linear(weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> nn.Linear:
    return _holding(nn.Linear(weight.shape[1], weight.shape[0],
                              bias=bias is not None), weight, bias)


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


def build_mobilenet_v1(model: nn.Module, spec: SubnetSpec,
                       layers) -> StaticMobileNetV1:
    """Walk a DS-MobileNetV1 classifier at ``spec``, building every layer
    with ``layers`` (a :class:`StaticLayers`, or another builder with the same
    ``conv_bn``/``conv``/``linear`` methods).

    Args:
        model (nn.Module): A classifier with a ``DSMobileNetV1`` backbone,
            a global-pooling neck and a ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network (its widths and BN row).
        layers: The layer builder.

    Returns:
        StaticMobileNetV1: the network, in eval mode.
    """
    bb = model.backbone
    row = spec.index
    width = spec['stem']
    modules = [layers.conv_bn(bb.stem.conv, bb.stem.bn, bb.in_channels,
                              width, row), nn.SiLU(inplace=True)]
    for blocks in bb.layers:
        for b in blocks:
            out = spec[b.group]
            se = b.se
            kernel = None if b.kernel_group is None else spec[b.kernel_group]
            modules += [
                layers.conv_bn(b.conv_dw, b.bn1, width, width, row, kernel),
                nn.SiLU(inplace=True),
                StaticSqueezeExcite(
                    layers.conv(se.conv_reduce, width, se.reduce_channels),
                    layers.conv(se.conv_expand, se.reduce_channels, width)),
                layers.conv_bn(b.conv_pw, b.bn2, width, out, row),
                nn.SiLU(inplace=True)
            ]
            width = out
    fc = layers.linear(model.head.fc, width)
    return StaticMobileNetV1(nn.Sequential(*modules), fc).eval()


def static_mobilenet_v1(model: nn.Module,
                        spec: SubnetSpec,
                        fold_bn: bool = True) -> StaticMobileNetV1:
    """Build sub-network ``spec`` of a DS-MobileNetV1 classifier statically.

    Args:
        model (nn.Module): A classifier with a ``DSMobileNetV1`` backbone,
            a global-pooling neck and a ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network (its widths and BN row).
        fold_bn (bool): Fold BN into the convolutions. Defaults to True.

    Returns:
        StaticMobileNetV1: a plain torch network in eval mode.
    """
    return build_mobilenet_v1(model, spec, StaticLayers(fold_bn))
