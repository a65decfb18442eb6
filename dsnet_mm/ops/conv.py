# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Prefix-sliced convolution."""
import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import DSBatchNorm2d, StatsSelector
from .utils import check_width
from .weight_cache import InferenceCache, memory_format


class DSConv2d(InferenceCache):
    """A 2-D convolution that runs on a dense prefix of its stored filters.

    The stored weight has the widest shape. A forward at input width ``c_in``
    and output width ``c_out`` uses ``weight[:c_out, :c_in_per_group]``, a view
    of the stored tensor: nothing is copied, and gradients reach only the used
    slice (within ``inference_cache`` a contiguous copy is cached, see
    :class:`~dsnet_mm.ops.weight_cache.InferenceCache`). The input width is
    read from the input tensor; the output width is an explicit argument
    (default: the stored maximum).

    Grouped convolutions keep the channels per group fixed on both sides and
    let the number of groups follow the width (``groups = c_in //
    group_channels``), because only then does every stored filter stay in the
    same group at every width, so that a sub-network's weight is a dense
    prefix of the stored one. Their output width therefore follows the input
    width (``c_out = groups * out_channels // max_groups``);
    ``group_channels=1`` is a depthwise convolution.

    **Kernel slicing** (DS-Net++'s DS-CNN++, our reading, see
    ``docs/reference/dsnet_pp.md``): a forward at ``kernel_size=k`` (odd,
    at most the stored kernel) uses the centre ``k x k`` of every stored filter
    (``weight[..., o:o+k, o:o+k]`` with ``o = (K - k) // 2``), a view like
    the channel prefix, with no per-size transform; the padding follows the
    kernel (``dilation * (k - 1) // 2``) unless it was set explicitly.

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width.
        kernel_size (int): Kernel size.
        stride (int): Stride. Defaults to 1.
        padding (int, optional): Padding; ``None`` keeps the spatial size at
            stride 1 at every kernel size (``dilation * (k - 1) // 2``).
            Defaults to None.
        dilation (int): Dilation. Defaults to 1.
        group_channels (int, optional): Input channels per group; ``None`` is
            a full convolution. Defaults to None.
        bias (bool): Whether to add a bias. Defaults to False.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 dilation: int = 1,
                 group_channels: Optional[int] = None,
                 bias: bool = False) -> None:
        super().__init__()
        if group_channels is not None and (
                in_channels % group_channels
                or out_channels % (in_channels // group_channels)):
            raise ValueError(
                f'in_channels ({in_channels}) must be a multiple of '
                f'group_channels ({group_channels}) and out_channels '
                f'({out_channels}) a multiple of the number of groups')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.auto_padding = padding is None
        self.padding = (dilation * (kernel_size - 1) // 2
                        if padding is None else padding)
        self.dilation = dilation
        self.group_channels = group_channels
        in_per_group = in_channels if group_channels is None else group_channels
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_per_group, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fan-out normal init, as the TF-style init of the reference code."""
        fan_out = self.out_channels * self.kernel_size**2
        if self.group_channels is not None:
            fan_out //= self.in_channels // self.group_channels
        nn.init.normal_(self.weight, 0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def groups_for(self, in_channels: int) -> int:
        """Number of groups when the input has ``in_channels`` channels."""
        if self.group_channels is None:
            return 1
        return in_channels // self.group_channels

    def check_kernel(self, kernel_size: Optional[int]) -> int:
        """The kernel a forward runs (default: the stored one); raises if it
        is not an odd size within the stored kernel."""
        if kernel_size is None:
            return self.kernel_size
        allowed = list(range(self.kernel_size % 2 or 2, self.kernel_size + 1,
                             2))
        if kernel_size not in allowed:
            raise ValueError(
                f'kernel_size={kernel_size!r} must be a centre slice of the '
                f'stored {self.kernel_size}x{self.kernel_size} kernel; '
                f'allowed: {allowed}')
        return kernel_size

    def padding_for(self, kernel_size: int) -> int:
        """The padding at kernel ``kernel_size`` (see the class notes)."""
        if not self.auto_padding:
            return self.padding
        return self.dilation * (kernel_size - 1) // 2

    def forward(self,
                x: torch.Tensor,
                out_channels: Optional[int] = None,
                kernel_size: Optional[int] = None) -> torch.Tensor:
        if self.inference():
            c_in, fmt = x.shape[1], memory_format(x)
            key = (c_in, out_channels, fmt, kernel_size)
            weight, bias, groups = self.hit(key) or self.cached(
                key, lambda: self.sliced(c_in, out_channels, kernel_size,
                                         copy=True, fmt=fmt))
        else:
            weight, bias, groups = self.sliced(x.shape[1], out_channels,
                                               kernel_size=kernel_size)
        return F.conv2d(x, weight, bias, self.stride,
                        self.padding_for(weight.shape[-1]), self.dilation,
                        groups)

    def forward_bn(self,
                   x: torch.Tensor,
                   bn: DSBatchNorm2d,
                   stats: StatsSelector,
                   out_channels: Optional[int] = None,
                   kernel_size: Optional[int] = None,
                   mask: Optional[Callable[[torch.Tensor],
                                           torch.Tensor]] = None
                   ) -> torch.Tensor:
        """The conv, then ``bn`` with statistics ``stats``.

        In cached inference (see :func:`~dsnet_mm.ops.inference_cache`) with
        one statistics row (a static sub-network) this is a single
        convolution with the BN folded into its weight and bias, cached per
        input width, output width, kernel, row and memory format, so a sliced
        sub-network runs the layers of a deployed static network.

        ``mask`` (per-sample routing that masks before the activation, see
        :class:`~dsnet_mm.models.routing.MaskedRouting`) is applied to the
        conv's output and again to the BN's output, as the reference DS-Net
        code's conv and BN each mask their outputs.
        """
        if mask is not None:
            return mask(bn(mask(self(x, out_channels,
                                     kernel_size=kernel_size)), stats))
        if isinstance(stats, int) and bn.fold and self.inference() and \
                bn.inference():
            c_in, fmt = x.shape[1], memory_format(x)
            key = (c_in, out_channels, fmt, stats, kernel_size)
            weight, bias, groups = self.hit(key) or self.cached(
                key, lambda: self.folded(c_in, out_channels, bn, stats, fmt,
                                         kernel_size), bn)
            return F.conv2d(x, weight, bias, self.stride,
                            self.padding_for(weight.shape[-1]),
                            self.dilation, groups)
        return bn(self(x, out_channels, kernel_size=kernel_size), stats)

    def folded(self,
               c_in: int,
               out_channels: Optional[int],
               bn: DSBatchNorm2d,
               row: int,
               fmt: torch.memory_format = torch.contiguous_format,
               kernel_size: Optional[int] = None) -> Tuple:
        """(weight, bias, groups) at ``c_in`` inputs, ``out_channels``
        outputs and ``kernel_size`` with BN row ``row`` folded in: detached
        copies, the weight in memory format ``fmt`` (the inference cache and
        static export share this)."""
        weight, bias, groups = self.sliced(c_in, out_channels,
                                           kernel_size=kernel_size)
        c_out = weight.shape[0]
        mean, var, gamma, beta = bn.sliced(c_out, row)
        scale = gamma * torch.rsqrt(var + bn.eps)
        shift = beta - mean * scale if bias is None else \
            beta + (bias - mean) * scale
        weight = weight * scale.reshape(-1, 1, 1, 1)
        # clone, not contiguous(): a [C, 1, k, k] or [C, C', 1, 1] weight
        # passes the channels-last check in NCHW strides, and the conv kernel
        # then picks its NCHW path (much slower for a depthwise conv)
        return (weight.detach().clone(memory_format=fmt),
                shift.detach(), groups)

    def sliced(self,
               c_in: int,
               out_channels: Optional[int],
               kernel_size: Optional[int] = None,
               copy: bool = False,
               fmt: torch.memory_format = torch.contiguous_format) -> Tuple:
        """(weight, bias, groups) at ``c_in`` inputs, ``out_channels``
        outputs and ``kernel_size`` (the centre of the stored kernel): views,
        or with ``copy`` detached copies, the weight in memory format
        ``fmt`` (the cached form)."""
        k = self.check_kernel(kernel_size)
        check_width('in_channels', c_in, self.in_channels, self.group_channels)
        groups = self.groups_for(c_in)
        if self.group_channels is None:
            c_out = self.out_channels if out_channels is None else out_channels
            check_width('out_channels', c_out, self.out_channels)
            in_per_group = c_in
        else:
            max_groups = self.in_channels // self.group_channels
            c_out = groups * (self.out_channels // max_groups)
            if out_channels is not None and out_channels != c_out:
                raise ValueError(
                    f'out_channels={out_channels} does not match the grouped '
                    f'conv\'s output width {c_out} at {c_in} input channels')
            in_per_group = self.group_channels
        weight = self.weight[:c_out, :in_per_group]
        if k != self.kernel_size:
            o = (self.kernel_size - k) // 2
            weight = weight[..., o:o + k, o:o + k]
        bias = None if self.bias is None else self.bias[:c_out]
        if copy:
            weight = weight.detach().clone(memory_format=fmt)
            bias = None if bias is None else bias.detach()
        return weight, bias, groups

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, '
             f'kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}')
        if self.group_channels is not None:
            s += f', group_channels={self.group_channels}'
        if self.bias is None:
            s += ', bias=False'
        return s
