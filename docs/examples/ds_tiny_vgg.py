# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A small VGG-style backbone made dynamic slimmable: the worked example of
``docs/slimmable_backbone.md``.

Three stages of 3x3 conv-BN-ReLU blocks after a 3x3 stem; each stage (and
the stem) is one width group. ``tests/test_docs.py`` builds it, trains a
sandwich step with it and checks its static form against the sliced one.
"""
from typing import List

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.deploy.static_layers import StaticNet, pool_head
from dsnet_mm.models.backbones.ds_backbone import DSBackboneMixin
from dsnet_mm.models.subnet import SubnetSpace, SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d, DSConv2d


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


@MODELS.register_module()
class DSTinyVGG(DSBackboneMixin, BaseBackbone):
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

    def _plain_supported(self) -> bool:
        # build_tiny_vgg below is not registered in dsnet_mm.deploy.builder:
        # in cached inference the sliced ops run (each with its cached,
        # BN-folded weights) instead of a static network
        return False

    # the progressive search's channel reordering
    def describe_channels(self, axes) -> str:
        """Every tensor axis of each width group; returns the output's."""
        axes.conv('stem.conv', self.stem.conv, None, 'stem')
        axes.bn('stem.bn', 'stem')
        group = 'stem'
        for i, blocks in enumerate(self.layers):
            for j, block in enumerate(blocks):
                name = f'layers.{i}.{j}'
                axes.conv(f'{name}.conv', block.conv, group, block.group)
                axes.bn(f'{name}.bn', block.group)
                group = block.group
        return group


def build_tiny_vgg(model: nn.Module, spec: SubnetSpec, layers) -> StaticNet:
    """The static form: sub-network ``spec`` of a classifier over
    ``DSTinyVGG`` as plain torch layers (``layers``: a
    :class:`~dsnet_mm.deploy.StaticLayers`)."""
    bb = model.backbone
    row = spec.index  # the sub-network's BN statistics row
    width = spec['stem']
    stem = nn.Sequential(
        layers.conv_bn(bb.stem.conv, bb.stem.bn, bb.in_channels, width, row),
        nn.ReLU(inplace=True))
    body, stage_ends = [], []
    for blocks in bb.layers:
        for b in blocks:
            out = spec[b.group]
            body += [layers.conv_bn(b.conv, b.bn, width, out, row),
                     nn.ReLU(inplace=True)]
            width = out
        stage_ends.append(len(body))
    return StaticNet(stem, body, pool_head(model, width, layers), stage_ends)
