# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of DS-ResNet as a plain torch ResNet.

Every conv is built at the sub-network's widths with the sliced weights
copied in and the sub-network's BN statistics folded in (residual and
projection branches alike; or kept as ``nn.BatchNorm2d``), so the result
needs neither dsnet_mm nor mmpretrain to run. A block with an SE (a gate's
attention head) is preceded by it as a plain SE on the block input. The walk
over the architecture takes any layer builder with the methods of
:class:`~dsnet_mm.deploy.StaticLayers`.
"""
from typing import List, Optional

import torch
import torch.nn as nn

from dsnet_mm.models.backbones.ds_resnet import DSResBlock
from dsnet_mm.models.subnet import SubnetSpec
from .static_layers import StaticLayers, StaticNet, build_se, pool_head


class StaticResBlock(nn.Module):
    """Residual block: ``relu(branch(x) + shortcut(x))``.

    Args:
        convs (list[nn.Module]): The residual branch's conv-BN layers (ReLU
            between them).
        shortcut (nn.Module, optional): The projection; None is the
            identity.
    """

    def __init__(self, convs: List[nn.Module],
                 shortcut: Optional[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.shortcut = shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs[:-1]:
            out = self.relu(conv(out))
        out = self.convs[-1](out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


def _build_block(block: DSResBlock, spec: SubnetSpec, width: int,
                 layers) -> List[nn.Module]:
    """``block`` at ``spec``'s widths, its input ``width`` channels wide:
    its SE (if any) and the :class:`StaticResBlock`."""
    row = spec.index
    convs = []
    c_in, last = width, len(block.kernels)
    for k in range(1, last + 1):
        c_out = spec[block.group] if k == last else spec[block.mid_group]
        convs.append(layers.conv_bn(getattr(block, f'conv{k}'),
                                    getattr(block, f'bn{k}'), c_in, c_out,
                                    row))
        c_in = c_out
    shortcut = None
    if block.downsample is not None:
        pool, conv, bn = block.projection
        shortcut = layers.conv_bn(conv, bn, width, spec[block.group], row)
        if pool is not None:
            shortcut = nn.Sequential(pool, shortcut)
    se = [] if block.se is None else [build_se(block.se, width, layers)]
    return se + [StaticResBlock(convs, shortcut)]


def build_resnet(model: nn.Module, spec: SubnetSpec, layers) -> StaticNet:
    """Walk a DS-ResNet classifier at ``spec``, building every layer with
    ``layers`` (a :class:`~dsnet_mm.deploy.StaticLayers`, or
    another builder with the same ``conv_bn``/``conv``/``linear`` methods).

    Args:
        model (nn.Module): A classifier with a ``DSResNet`` backbone (its
            last stage as the output), a global-pooling neck and a
            ``DSLinearClsHead``, or a detector with that backbone (no
            classifier head is built).
        spec (SubnetSpec): The sub-network (its widths and BN row).
        layers: The layer builder.

    Returns:
        StaticNet: the network, in eval mode.
    """
    bb = model.backbone
    stem, width = [], bb.in_channels
    for _, conv, bn, group in bb.stem_layers():
        stem += [layers.conv_bn(conv, bn, width, spec[group], spec.index),
                 nn.ReLU(inplace=True)]
        width = spec[group]
    stem = nn.Sequential(*stem, bb.maxpool)
    body, stage_ends = [], []
    for name in bb.res_layers:
        for block in getattr(bb, name):
            body += _build_block(block, spec, width, layers)
            width = spec[block.group]
        stage_ends.append(len(body))
    return StaticNet(stem, body, pool_head(model, width, layers), stage_ends)


def static_resnet(model: nn.Module,
                  spec: SubnetSpec,
                  fold_bn: bool = True) -> StaticNet:
    """Build sub-network ``spec`` of a DS-ResNet classifier statically.

    Args:
        model (nn.Module): A classifier with a ``DSResNet`` backbone (its
            last stage as the output), a global-pooling neck and a
            ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network (its widths and BN row).
        fold_bn (bool): Fold BN into the convolutions. Defaults to True.

    Returns:
        StaticNet: a plain torch network in eval mode.
    """
    return build_resnet(model, spec, StaticLayers(fold_bn))
