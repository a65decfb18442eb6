# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-MobileNetV1: the dynamic slimmable MobileNetV1 supernet of DS-Net."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d, DSSqueezeExcite
from ..subnet import SubnetSpace, SubnetSpec, SubnetsCfg

SubnetKey = Union[int, str, SubnetSpec]


class DSConvBNAct(nn.Module):
    """Sliced conv, per-sub-network BN and Swish, widened by one group."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int, group: str, num_stats: int) -> None:
        super().__init__()
        self.group = group
        self.conv = DSConv2d(in_channels, out_channels, kernel_size, stride)
        self.bn = DSBatchNorm2d(out_channels, num_stats)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, spec[self.group]), spec.index))


class DSDepthwiseSeparable(nn.Module):
    """MobileNetV1 block: dw3x3-BN-Swish, SE, pw1x1-BN-Swish (no residual).

    The depthwise part runs at the input width; the pointwise conv widens to
    the block's group width.

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width.
        stride (int): Stride of the depthwise conv.
        group (str): Width group of the block's output.
        num_stats (int): BN statistics rows (sub-networks + largest).
        se_ratio (float): SE squeeze ratio of the widest input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 group: str, num_stats: int, se_ratio: float) -> None:
        super().__init__()
        self.group = group
        self.conv_dw = DSConv2d(
            in_channels, in_channels, 3, stride, group_channels=1)
        self.bn1 = DSBatchNorm2d(in_channels, num_stats)
        self.se = DSSqueezeExcite(in_channels, se_ratio)
        self.conv_pw = DSConv2d(in_channels, out_channels, 1)
        self.bn2 = DSBatchNorm2d(out_channels, num_stats)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        x = self.act(self.bn1(self.conv_dw(x), spec.index))
        x = self.se(x)
        x = self.conv_pw(x, spec[self.group])
        return self.act(self.bn2(x, spec.index))


@MODELS.register_module()
class DSMobileNetV1(BaseBackbone):
    """Dynamic slimmable MobileNetV1 (DS-Net, CVPR 2021).

    The supernet of the reference release: a 3x3 stem and five stages of
    depthwise-separable blocks, SE in every block, Swish everywhere except
    inside SE. Each stage (and the stem) is one width group. The 14 reference
    sub-networks keep the narrow early widths 16/32/48/96 and grow stage 4 as
    ``224 + 32k`` and stage 5 as ``736 + 32k`` (k = 0..13); the separate
    ``largest`` architecture (every group at its widest: 24/88/168/264/640/1152)
    is the in-place teacher. ``arch='cifar'`` is the same supernet for 32x32
    inputs (stride-1 stem and first stages).

    The active sub-network is held by the backbone (:meth:`set_subnet`,
    :meth:`subnet`) and passed explicitly to every layer in ``forward``; it
    persists across forwards and defaults to the largest.

    Args:
        arch (str | dict): ``'imagenet'``, ``'cifar'``, or a dict with keys
            ``stem`` (``(width, stride)``) and ``stages`` (a list of
            ``(group, widest width, blocks, stride)``). Defaults to
            ``'imagenet'``.
        subnets (dict | list, optional): The sub-network list, see
            :class:`~dsnet_mm.models.subnet.SubnetSpace`. Defaults to the
            architecture's reference list.
        in_channels (int): Image channels. Defaults to 3.
        se_ratio (float): SE squeeze ratio. Defaults to 0.25.
        out_indices (Sequence[int]): Stages whose outputs are returned
            (negative counts from the last). Defaults to ``(-1, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k (k>0) in
            train mode; -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BN in eval mode while training.
            Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """
    # (group, widest width, blocks, stride of the first block): reference §2.1
    _stages = [('stage1', 88, 1, 1), ('stage2', 168, 2, 2),
               ('stage3', 264, 2, 2), ('stage4', 640, 6, 2),
               ('stage5', 1152, 2, 2)]
    arch_settings = {
        'imagenet': dict(stem=(24, 2), stages=_stages),
        # 32x32 inputs: stride-1 stem and last stage, 4x4 features at the end
        'cifar': dict(
            stem=(24, 1),
            stages=[s[:3] + (st, ) for s, st in zip(_stages, (1, 2, 2, 2, 1))]),
    }
    # DS-Net's 14 uniform sub-networks (reference §2.1)
    default_subnets = dict(
        smallest=dict(
            stem=16, stage1=32, stage2=48, stage3=96, stage4=224, stage5=736),
        widest=dict(
            stem=16, stage1=32, stage2=48, stage3=96, stage4=640, stage5=1152),
        num=14)

    def __init__(self,
                 arch: Union[str, dict] = 'imagenet',
                 subnets: Optional[SubnetsCfg] = None,
                 in_channels: int = 3,
                 se_ratio: float = 0.25,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(f'arch={arch!r} is not one of '
                                 f'{sorted(self.arch_settings)}')
            arch = self.arch_settings[arch]
        elif not isinstance(arch, dict) or set(arch) != {'stem', 'stages'}:
            raise ValueError("arch must be 'imagenet', 'cifar' or a dict with "
                             f"keys 'stem' and 'stages', got {arch!r}")
        stem_width, stem_stride = arch['stem']
        stages = [tuple(s) for s in arch['stages']]
        num_stages = len(stages)
        for i in out_indices:
            if not -num_stages <= i < num_stages:
                raise ValueError(f'out_indices entries must be in '
                                 f'{-num_stages}..{num_stages - 1}, got {i}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in -1..{num_stages}, '
                             f'got {frozen_stages}')
        self.out_indices = tuple(i % num_stages for i in out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        max_widths = dict(stem=stem_width)
        max_widths.update((g, w) for g, w, _, _ in stages)
        self.space = SubnetSpace(
            max_widths, self.default_subnets if subnets is None else subnets)
        self._active = self.space.largest
        num_stats = self.space.num_stats

        self.stem = DSConvBNAct(in_channels, stem_width, 3, stem_stride,
                                'stem', num_stats)
        self.in_channels = in_channels
        self.layers = nn.ModuleList()
        width = stem_width
        for group, out_width, num_blocks, stride in stages:
            blocks = nn.ModuleList()
            for j in range(num_blocks):
                blocks.append(
                    DSDepthwiseSeparable(width, out_width,
                                         stride if j == 0 else 1, group,
                                         num_stats, se_ratio))
                width = out_width
            self.layers.append(blocks)
        self._freeze_stages()

    # --- the active sub-network -----------------------------------------
    @property
    def active_subnet(self) -> SubnetSpec:
        return self._active

    def set_subnet(self, key: SubnetKey) -> SubnetSpec:
        """Make a sub-network (index, name or spec) the active one."""
        self._active = self.space.get(key)
        return self._active

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Run the block with a sub-network active, then restore the old."""
        previous = self._active
        try:
            yield self.set_subnet(key)
        finally:
            self._active = previous

    # --- forward ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'DSMobileNetV1 expects images of shape (N, {self.in_channels},'
                f' H, W) (in_channels={self.in_channels}), got '
                f'{tuple(x.shape)}')
        spec = self._active
        x = self.stem(x, spec)
        outs = []
        for i, blocks in enumerate(self.layers):
            for block in blocks:
                x = block(x, spec)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    # --- mmpretrain conventions ----------------------------------------
    def _freeze_stages(self) -> None:
        modules: List[nn.Module] = []
        if self.frozen_stages >= 0:
            modules.append(self.stem)
        modules.extend(self.layers[:max(self.frozen_stages, 0)])
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'DSMobileNetV1':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, DSBatchNorm2d):
                    m.eval()
        return self
