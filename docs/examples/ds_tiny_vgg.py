# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A small VGG-style backbone made dynamic slimmable: the worked example of
``docs/slimmable_backbone.md``.

Three stages of 3x3 conv-BN-ReLU blocks after a 3x3 stem; each stage (and
the stem) is one width group. ``tests/test_docs.py`` builds it, trains a
sandwich step with it and checks its static form against the sliced one.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.models.backbones.ds_backbone import StagedBackboneMixin
from dsnet_mm.models.subnet import SubnetSpace, SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d, DSConv2d
from dsnet_mm.static import LayerBuilder


class DSConvBNReLU(nn.Module):
    """3x3 conv, BN with per-sub-network statistics, ReLU; its output width
    is the width of ``group`` in the sub-network it runs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 group: str, num_stats: int) -> None:
        super().__init__()
        self.group = group
        self.conv = DSConv2d(in_channels, out_channels, 3, stride)
        self.bn = DSBatchNorm2d(out_channels, num_stats)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        # the input width is read from x; the output width is the group's
        x = self.conv.forward_bn(x, self.bn, spec.stats, spec[self.group])
        return spec.mask(self.act(x), self.group)

    def build_static(self, spec: SubnetSpec, width: int,
                     layers: LayerBuilder) -> Tuple[List[nn.Module], int]:
        """The static form beside the forward: (the block's layers at
        ``spec``'s widths, its input ``width`` channels wide, built by
        ``layers``; the output width)."""
        out = spec[self.group]
        return [layers.conv_bn(self.conv, self.bn, width, out, spec.stats),
                nn.ReLU(inplace=True)], out

    def describe_channels(self, axes, prefix: str, in_group) -> str:
        """The channel axes beside the forward: every tensor axis of each
        width group (module ``prefix``, input group ``in_group``) in the
        search's ``ChannelAxes``; returns the output's group."""
        axes.conv(f'{prefix}.conv', self.conv, in_group, self.group)
        axes.bn(f'{prefix}.bn', self.group)
        return self.group


@MODELS.register_module()
class DSTinyVGG(StagedBackboneMixin, BaseBackbone):
    """A dynamic slimmable VGG-style network.

    Args:
        arch (dict): ``stem`` (widest width) and ``stages``, a list of
            ``(group, widest width, blocks, stride)``.
        subnets (dict | list): The sub-network list (a ladder or explicit
            widths), see :class:`~dsnet_mm.models.subnet.SubnetSpace`.
        in_channels (int): Image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Defaults to ``(-1, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k. Defaults
            to -1 (nothing).
        norm_eval (bool): Keep every BN in eval mode while training.
            Defaults to False.
        init_cfg (dict, optional): Initialization config.
    """

    def __init__(self, arch: dict, subnets, in_channels: int = 3,
                 out_indices=(-1, ), frozen_stages: int = -1,
                 norm_eval: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg)
        stages = [tuple(s) for s in arch['stages']]
        self.out_indices = self._check_stage_args(
            len(stages), out_indices, frozen_stages, in_channels, norm_eval)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_channels = in_channels
        # the width groups and the sub-network list: one SubnetSpace
        max_widths = dict(stem=arch['stem'])
        max_widths.update((group, width) for group, width, _, _ in stages)
        self.space = SubnetSpace(max_widths, subnets)
        self._active = self.space.largest
        # no gate in this example (see docs/slimmable_backbone.md)
        self.gate_stage, self.window = None, []
        num_stats = self.space.num_stats
        self.stem = DSConvBNReLU(in_channels, arch['stem'], 1, 'stem',
                                 num_stats)
        self.layers = nn.ModuleList()
        width = arch['stem']
        for group, out_width, num_blocks, stride in stages:
            self.layers.append(nn.ModuleList(
                DSConvBNReLU(width if j == 0 else out_width, out_width,
                             stride if j == 0 else 1, group, num_stats)
                for j in range(num_blocks)))
            width = out_width
        self._freeze_stages()

    # what the mixin's forward walks
    def _forward_stem(self, x: torch.Tensor,
                      spec: SubnetSpec) -> torch.Tensor:
        return self.stem(x, spec)

    def _stages(self) -> List[nn.ModuleList]:
        return list(self.layers)

    def _freeze_stages(self) -> None:
        modules = [self.stem] if self.frozen_stages >= 0 else []
        modules.extend(self.layers[:max(self.frozen_stages, 0)])
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    # the static form: the mixin's build_static walks the stages, each
    # block building its own; the stem is built here
    def _static_stem(self, spec: SubnetSpec,
                     layers: LayerBuilder) -> Tuple[nn.Module, int]:
        stem, width = self.stem.build_static(spec, self.in_channels, layers)
        return nn.Sequential(*stem), width

    # the progressive search's channel reordering: the mixin's
    # describe_channels walks the stages, each block describing its own
    def _describe_stem(self, axes) -> str:
        return self.stem.describe_channels(axes, 'stem', None)
