# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The gather-indexing baseline of the latency benchmark.

Dynamic ops in the style of mmrazor keep the full weights and pick a
sub-network's channels by indexing on every forward
(``weight[out_index][:, in_index]``), which gathers a fresh copy of every
weight, BN parameter and statistic per call. These layers do exactly that,
holding the DS model's own parameters (nothing is copied at build time), so
the benchmark can set that cost against prefix slicing.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLayerNorm, DSLinear,
                          DSQKVLinear)
from dsnet_mm.static import LayerBuilder
from dsnet_mm.static.cached import build_subnet


def _index(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


class IndexedConv2d(nn.Module):
    """A DS conv run at ``(c_in, c_out)`` (and a centre ``kernel``) by
    gathering its weight rows (and kernel taps)."""

    def __init__(self, conv: DSConv2d, c_in: int, c_out: int,
                 kernel: Optional[int] = None) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        k = conv.check_kernel(kernel)
        self.stride, self.padding = conv.stride, conv.padding_for(k)
        self.register_buffer(
            'tap_index', None if k == conv.kernel_size else
            _index(k, conv.weight.device) + (conv.kernel_size - k) // 2)
        self.dilation = conv.dilation
        self.groups = conv.groups_for(c_in)
        device = conv.weight.device
        self.register_buffer('out_index', _index(c_out, device))
        self.register_buffer('in_index', _index(c_in // self.groups, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.index_select(0, self.out_index).index_select(
            1, self.in_index)
        if self.tap_index is not None:
            weight = weight.index_select(2, self.tap_index).index_select(
                3, self.tap_index)
        bias = None if self.bias is None else self.bias.index_select(
            0, self.out_index)
        return F.conv2d(x, weight, bias, self.stride, self.padding,
                        self.dilation, self.groups)


class IndexedBatchNorm2d(nn.Module):
    """A DS batch norm (one statistics row) gathering its channels."""

    def __init__(self, bn: DSBatchNorm2d, c: int, row: int) -> None:
        super().__init__()
        self.bn = bn
        self.row = row
        self.register_buffer('index', _index(c, bn.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, i = self.bn, self.index
        return F.batch_norm(x, bn.running_mean[self.row].index_select(0, i),
                            bn.running_var[self.row].index_select(0, i),
                            bn.weight.index_select(0, i),
                            bn.bias.index_select(0, i), False, 0.0, bn.eps)


class IndexedLinear(nn.Module):
    """A linear layer run on ``c_in`` inputs by gathering weight columns
    (and, given ``out_index``, the rows and bias entries of those outputs;
    else all outputs, as a classifier)."""

    def __init__(self, fc: nn.Module, c_in: int,
                 out_index: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.weight = fc.weight
        self.bias = fc.bias
        self.register_buffer('in_index', _index(c_in, fc.weight.device))
        self.register_buffer('out_index', out_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if self.out_index is not None:
            weight = weight.index_select(0, self.out_index)
            bias = None if bias is None else bias.index_select(
                0, self.out_index)
        return F.linear(x, weight.index_select(1, self.in_index), bias)


class IndexedLayerNorm(nn.Module):
    """A DS layer norm on ``d`` channels gathering its affine parameters."""

    def __init__(self, ln: DSLayerNorm, d: int) -> None:
        super().__init__()
        self.ln = ln
        self.register_buffer('index', _index(d, ln.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ln, i = self.ln, self.index
        return F.layer_norm(x, (i.numel(), ), ln.weight.index_select(0, i),
                            ln.bias.index_select(0, i), ln.eps)


class IndexedLayers(LayerBuilder):
    """The layer builder of indexing layers (see
    :class:`~dsnet_mm.static.LayerBuilder`)."""

    def conv_bn(self, conv: DSConv2d, bn: DSBatchNorm2d, c_in: int,
                c_out: int, row: int,
                kernel: Optional[int] = None) -> nn.Module:
        return nn.Sequential(
            IndexedConv2d(conv, c_in, c_out, kernel), IndexedBatchNorm2d(
                bn, c_out, row))

    def conv(self, conv: DSConv2d, c_in: int, c_out: int) -> nn.Module:
        return IndexedConv2d(conv, c_in, c_out)

    def linear(self, fc: nn.Module, c_in: int) -> nn.Module:
        return IndexedLinear(fc, c_in)

    def sliced_linear(self, fc: DSLinear, c_in: int,
                      c_out: int) -> nn.Module:
        return IndexedLinear(fc, c_in, _index(c_out, fc.weight.device))

    def qkv(self, qkv: DSQKVLinear, d: int, heads: int) -> nn.Module:
        """The rows of ``heads`` heads of each of q, k and v."""
        rows = _index(heads * qkv.head_dims, qkv.weight.device)
        stride = qkv.num_heads * qkv.head_dims
        return IndexedLinear(qkv, d, torch.cat([rows + k * stride
                                                for k in range(3)]))

    def layer_norm(self, ln: DSLayerNorm, d: int) -> nn.Module:
        return IndexedLayerNorm(ln, d)


def indexed_subnet(model: nn.Module, spec: SubnetSpec) -> nn.Module:
    """Sub-network ``spec`` of a DS classifier, run by indexing the
    supernet's weights on every forward."""
    return build_subnet(model, spec, IndexedLayers())
