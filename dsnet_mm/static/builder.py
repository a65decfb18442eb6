# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The layer builders a static sub-network is built with.

Each DS block builds its own static form (``build_static``) from the layer
builder it is given: :class:`LayerBuilder` declares what a block may ask
for (a conv with its BN, a conv, linear layers, a merged qkv, a layer norm),
each at the sub-network's widths. :class:`StaticLayers` answers with plain
torch layers holding copies of the sliced weights (BN folded for export, or
kept as ``nn.BatchNorm2d``); the benchmark's gather-indexing baseline
(:class:`~dsnet_mm.analysis.index_baseline.IndexedLayers`) answers with
layers that index the full weights at every call.
"""
from abc import ABC, abstractmethod
from typing import Optional

import torch
import torch.nn as nn

from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLayerNorm, DSLinear,
                          DSQKVLinear)


def _static_conv(conv: DSConv2d, c_in: int, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], groups: int) -> nn.Conv2d:
    """``nn.Conv2d`` with ``conv``'s geometry holding copies of ``weight``
    and ``bias``."""
    k = weight.shape[-1]
    return holding(
        nn.Conv2d(c_in, weight.shape[0], k, conv.stride, conv.padding_for(k),
                  conv.dilation, groups, bias=bias is not None), weight, bias)


def holding(static: nn.Module, weight: torch.Tensor,
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


def _copied_linear(weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> nn.Linear:
    return holding(nn.Linear(weight.shape[1], weight.shape[0],
                              bias=bias is not None), weight, bias)


class LayerBuilder(ABC):
    """What a DS block's ``build_static`` asks of a layer builder: each
    layer of a sub-network at its widths (``c_in`` inputs, ``c_out``
    outputs, BN statistics row ``row``)."""

    @abstractmethod
    def conv_bn(self, conv: DSConv2d, bn: DSBatchNorm2d, c_in: int,
                c_out: int, row: int,
                kernel: Optional[int] = None) -> nn.Module:
        """``conv`` then ``bn`` (kernel ``kernel``: a centre slice)."""

    @abstractmethod
    def conv(self, conv: DSConv2d, c_in: int, c_out: int) -> nn.Module:
        """``conv`` alone (an SE's or gate's 1x1)."""

    @abstractmethod
    def linear(self, fc: nn.Module, c_in: int) -> nn.Module:
        """A classifier reading the first ``c_in`` inputs (all outputs)."""

    @abstractmethod
    def sliced_linear(self, fc: DSLinear, c_in: int,
                      c_out: int) -> nn.Module:
        """``fc`` at ``c_in`` inputs and ``c_out`` outputs."""

    @abstractmethod
    def qkv(self, qkv: DSQKVLinear, d: int, heads: int) -> nn.Module:
        """q, k and v of ``heads`` heads from ``d`` inputs, one matmul."""

    @abstractmethod
    def layer_norm(self, ln: DSLayerNorm, d: int) -> nn.Module:
        """``ln`` on the first ``d`` channels."""


class StaticLayers(LayerBuilder):
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
        return _copied_linear(*fc.sliced(c_in, c_out))

    def qkv(self, qkv: DSQKVLinear, d: int, heads: int) -> nn.Linear:
        """q, k and v of ``heads`` heads from ``d`` inputs, one matmul."""
        return _copied_linear(*qkv.sliced(d, heads))

    def layer_norm(self, ln: DSLayerNorm, d: int) -> nn.LayerNorm:
        return holding(nn.LayerNorm(d, eps=ln.eps), ln.weight[:d],
                        ln.bias[:d])
