# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The blocks of DS-ResNet: the residual blocks (basic, bottleneck) and the
deep stem's conv module. Each runs at a sub-network's widths (``forward``)
and builds its own static form (``build_static``) beside it."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d, DSSqueezeExcite
from dsnet_mm.static import LayerBuilder, StaticResBlock, build_se
from ..gates import DSGate
from ..routing import RunSpec
from ..subnet import SubnetSpec

# mmpretrain's threshold below which a block has no DropPath
DROP_PATH_EPS = 1e-5


class DSResBlock(nn.Module):
    """A residual block built from its class table of convs.

    The residual branch is ``len(kernels)`` convs, each followed by BN; all
    but the last run at the block's interior width (its own group) and are
    followed by ReLU and the interior's mask; the last widens to the stream.
    The shortcut is the identity when the block keeps its stream (same widest
    width, stride 1), so both sides of the add are the same width group.
    Otherwise it is a projection (1x1 conv with the block's stride, then BN;
    with ``avg_down`` an average pooling with the stride, then a stride-1
    conv and BN), sliced on both sides: its input width is read from the
    input, its output width is the block's stream group. After the add and
    the ReLU the stream group's mask is applied, so on the mask path of
    per-sample routing every image keeps only its own channels, on both
    sides of every later add. A routing that masks before the activation
    (``mask_position='before_act'`` of
    :class:`~dsnet_mm.models.routing.MaskedRouting`) masks every conv's and
    BN's output instead, the projection's included, so both sides of the add
    arrive masked.

    The layer names are mmpretrain's (``conv1``, ``bn1`` .., ``downsample.0``
    ..), and so are ``norm1`` .. (the BNs), ``style``, ``dilation``,
    ``with_cp`` and ``drop_path``.

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width (the stream).
        stride (int): Stride of the block.
        group (str): Width group of the output stream.
        mid_group (str): Width group of the block's interior.
        num_stats (int): BN statistics rows (sub-networks + largest).
        se (bool): Start with an SE on the block input. Defaults to False.
        gate (dict, optional): ``DSGate`` keyword arguments (``num_choices``,
            ``features``) if that SE is the gate's attention head (the block
            holds the gate). Defaults to None.
        se_ratio (float): Squeeze ratio of the SE. Defaults to 0.25.
        expansion (int, optional): Widest stream / widest interior; None is
            the class's. Defaults to None.
        dilation (int): Dilation of the first 3x3 conv. Defaults to 1.
        style (str): ``'pytorch'`` (a bottleneck's stride on its 3x3 conv)
            or ``'caffe'`` (on its first 1x1 conv). Defaults to
            ``'pytorch'``.
        avg_down (bool): Downsample the projection shortcut by average
            pooling before a stride-1 conv. Defaults to False.
        with_cp (bool): Recompute the block in the backward pass (activation
            checkpointing) instead of storing its activations. Defaults to
            False.
        drop_path_rate (float): Stochastic depth rate of the residual
            branch. Defaults to 0.
        bn_kwargs (dict, optional): ``eps`` / ``momentum`` of the BNs.
            Defaults to None.
    """

    expansion = 1  # widest stream / widest interior (the class's default)
    kernels: Tuple[int, ...] = (3, 3)  # kernel size of each conv
    stride_at = 0  # which conv has the block's stride (style 'pytorch')
    caffe_stride_at = 0  # the same in style 'caffe'

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 group: str,
                 mid_group: str,
                 num_stats: int,
                 se: bool = False,
                 gate: Optional[dict] = None,
                 se_ratio: float = 0.25,
                 expansion: Optional[int] = None,
                 dilation: int = 1,
                 style: str = 'pytorch',
                 avg_down: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.0,
                 bn_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expansion = expansion or type(self).expansion
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        self.group = group
        self.mid_group = mid_group
        bn_kwargs = bn_kwargs or {}
        self.se = None
        if gate:
            self.se = DSGate(in_channels, se_ratio=se_ratio, **gate)
        elif se:
            self.se = DSSqueezeExcite(in_channels, se_ratio)
        last = len(self.kernels)
        stride_at = self.stride_at if style == 'pytorch' \
            else self.caffe_stride_at
        dilate_at = self.kernels.index(3)
        width = in_channels
        for k, kernel in enumerate(self.kernels):
            out = out_channels if k == last - 1 else self.mid_channels
            self.add_module(
                f'conv{k + 1}',
                DSConv2d(width, out, kernel,
                         stride if k == stride_at else 1,
                         dilation=dilation if k == dilate_at else 1))
            self.add_module(f'bn{k + 1}',
                            DSBatchNorm2d(out, num_stats, **bn_kwargs))
            width = out
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            layers: List[nn.Module] = []
            if avg_down and stride != 1:
                layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True,
                                           count_include_pad=False))
            layers += [
                DSConv2d(in_channels, out_channels, 1,
                         1 if layers else stride),
                DSBatchNorm2d(out_channels, num_stats, **bn_kwargs)
            ]
            self.downsample = nn.ModuleList(layers)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path_rate) \
            if drop_path_rate > DROP_PATH_EPS else nn.Identity()

    @property
    def norm1(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn1``."""
        return self.bn1

    @property
    def norm2(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn2``."""
        return self.bn2

    @property
    def last_norm(self) -> DSBatchNorm2d:
        """The BN before the add (zeroed by ``zero_init_residual``)."""
        return getattr(self, f'bn{len(self.kernels)}')

    @property
    def projection(self) -> Tuple[Optional[nn.Module], DSConv2d,
                                  DSBatchNorm2d]:
        """(pooling or None, conv, BN) of the projection shortcut."""
        *pool, conv, bn = self.downsample
        return (pool[0] if pool else None), conv, bn

    def forward_residual(self, x: torch.Tensor,
                         spec: RunSpec) -> torch.Tensor:
        """The residual branch up to its last BN, at ``spec``'s widths."""
        last = len(self.kernels)
        for k in range(1, last):
            conv, bn = getattr(self, f'conv{k}'), getattr(self, f'bn{k}')
            x = self.relu(conv.forward_bn(
                x, bn, spec.stats, spec[self.mid_group],
                mask=spec.pre_act_mask(self.mid_group)))
            x = spec.mask(x, self.mid_group)
        conv, bn = getattr(self, f'conv{last}'), self.last_norm
        return conv.forward_bn(x, bn, spec.stats, spec[self.group],
                               mask=spec.pre_act_mask(self.group))

    def _body(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        identity = x
        if self.downsample is not None:
            pool, conv, bn = self.projection
            identity = conv.forward_bn(
                x if pool is None else pool(x), bn, spec.stats,
                spec[self.group], mask=spec.pre_act_mask(self.group))
        out = self.drop_path(self.forward_residual(x, spec))
        out = self.relu(out + identity)
        return spec.mask(out, self.group)

    def forward_body(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        """The block after its SE: both branches, the add and the mask."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._body, x, spec, use_reentrant=False)
        return self._body(x, spec)

    def forward(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)  # a gate's attention head only: a fixed subnet
        return self.forward_body(x, spec)

    def forward_gate(self, x: torch.Tensor, spec: RunSpec
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Through the gate: (input scaled by its attention, logits)."""
        return self.se.forward_gate(x)

    def forward_after_gate(self, x: torch.Tensor,
                           spec: RunSpec) -> torch.Tensor:
        return self.forward_body(x, spec)

    def build_static(self, spec: SubnetSpec, width: int,
                     layers: LayerBuilder) -> Tuple[List[nn.Module], int]:
        """The block at ``spec``'s widths, its input ``width`` channels
        wide, built by ``layers``: (its SE if any and the
        :class:`~dsnet_mm.static.StaticResBlock`, the output width)."""
        convs, c_in, last = [], width, len(self.kernels)
        for k in range(1, last + 1):
            c_out = spec[self.group] if k == last else spec[self.mid_group]
            convs.append(layers.conv_bn(getattr(self, f'conv{k}'),
                                        getattr(self, f'bn{k}'), c_in, c_out,
                                        spec.stats))
            c_in = c_out
        shortcut = None
        if self.downsample is not None:
            pool, conv, bn = self.projection
            shortcut = layers.conv_bn(conv, bn, width, spec[self.group],
                                      spec.stats)
            if pool is not None:
                shortcut = nn.Sequential(pool, shortcut)
        se = [] if self.se is None else [build_se(self.se, width, layers)]
        return se + [StaticResBlock(convs, shortcut)], spec[self.group]

    def describe_channels(self, axes, prefix: str,
                          in_group: Optional[str]) -> str:
        """Every tensor axis of the block (module ``prefix``, input group
        ``in_group``) in a :class:`~dsnet_mm.search.channels.ChannelAxes`:
        the interior convs at the block's own group; the last conv and the
        projection write the stage's stream (one layer: ``tied``). Returns
        the output's group."""
        if self.se is not None:
            axes.se(f'{prefix}.se', self.se, in_group)
        width, last = in_group, len(self.kernels)
        for k in range(1, last + 1):
            out = self.group if k == last else self.mid_group
            axes.conv(f'{prefix}.conv{k}', getattr(self, f'conv{k}'), width,
                      out, tied=k == last)
            axes.bn(f'{prefix}.bn{k}', out)
            width = out
        if self.downsample is not None:
            n = len(self.downsample)
            axes.conv(f'{prefix}.downsample.{n - 2}', self.downsample[n - 2],
                      in_group, self.group, tied=True)
            axes.bn(f'{prefix}.downsample.{n - 1}', self.group)
        return self.group


class DSBasicBlock(DSResBlock):
    """ResNet basic block: 3x3 conv (with the stride), 3x3 conv."""

    expansion = 1
    kernels = (3, 3)
    stride_at = 0
    caffe_stride_at = 0


class DSBottleneck(DSResBlock):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand; both inner convs run
    at the interior width. The stride is on the 3x3 conv (``'pytorch'``
    style) or on the first 1x1 (``'caffe'``)."""

    expansion = 4
    kernels = (1, 3, 1)
    stride_at = 1
    caffe_stride_at = 0

    @property
    def norm3(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn3``."""
        return self.bn3


class DSConvModule(nn.Module):
    """Conv, BN and ReLU at one width group: a layer of the deep stem,
    named as mmcv's ``ConvModule`` (``conv``, ``bn``, ``activate``).

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width.
        stride (int): Stride of the 3x3 conv.
        group (str): Width group of the output.
        num_stats (int): BN statistics rows; a forward without a
            sub-network runs the last (the largest architecture's).
        bn_kwargs (dict, optional): ``eps`` / ``momentum`` of the BN.
            Defaults to None.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 group: str, num_stats: int,
                 bn_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.group = group
        self.conv = DSConv2d(in_channels, out_channels, 3, stride)
        self.bn = DSBatchNorm2d(out_channels, num_stats, **(bn_kwargs or {}))
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor,
                spec: Optional[SubnetSpec] = None) -> torch.Tensor:
        if spec is None:  # the largest architecture
            return self.activate(self.conv.forward_bn(
                x, self.bn, self.bn.num_subnets - 1))
        x = self.activate(self.conv.forward_bn(
            x, self.bn, spec.stats, spec[self.group],
            mask=spec.pre_act_mask(self.group)))
        return spec.mask(x, self.group)
