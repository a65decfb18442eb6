# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of DS-MobileNetV1 as a plain torch network.

Every layer is built at the sub-network's widths with the sliced weights
copied in and the sub-network's BN statistics folded into the convolutions
(for export) or kept as ``nn.BatchNorm2d`` (the limit the slice path should
reach in speed), so the result needs neither dsnet_mm nor mmpretrain to run.
The walk over the architecture is shared with other layer builders, e.g. the
gather-indexing baseline of the benchmark.
"""
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from .static_layers import StaticLayers, StaticNet, build_se, pool_head


def build_mobilenet_v1(model: nn.Module, spec: SubnetSpec,
                       layers) -> StaticNet:
    """Walk a DS-MobileNetV1 classifier at ``spec``, building every layer
    with ``layers`` (a :class:`~dsnet_mm.deploy.StaticLayers`, or another
    builder with the same ``conv_bn``/``conv``/``linear`` methods).

    Args:
        model (nn.Module): A classifier with a ``DSMobileNetV1`` backbone,
            a global-pooling neck and a ``DSLinearClsHead``, or a detector
            with that backbone (no classifier head is built).
        spec (SubnetSpec): The sub-network (its widths and BN row).
        layers: The layer builder.

    Returns:
        StaticNet: the network (the stem conv; for each block the depthwise
        conv, the SE or gate and the pointwise conv; pooling and the
        classifier) with the end of each stage, in eval mode.
    """
    bb = model.backbone
    row = spec.index
    width = spec['stem']
    stem = nn.Sequential(
        layers.conv_bn(bb.stem.conv, bb.stem.bn, bb.in_channels, width, row),
        nn.SiLU(inplace=True))
    body, stage_ends = [], []
    for blocks in bb.layers:
        for b in blocks:
            out = spec[b.group]
            kernel = None if b.kernel_group is None else spec[b.kernel_group]
            body += [
                layers.conv_bn(b.conv_dw, b.bn1, width, width, row, kernel),
                nn.SiLU(inplace=True),
                build_se(b.se, width, layers),
                layers.conv_bn(b.conv_pw, b.bn2, width, out, row),
                nn.SiLU(inplace=True)
            ]
            width = out
        stage_ends.append(len(body))
    return StaticNet(stem, body, pool_head(model, width, layers), stage_ends)


def static_mobilenet_v1(model: nn.Module,
                        spec: SubnetSpec,
                        fold_bn: bool = True) -> StaticNet:
    """Build sub-network ``spec`` of a DS-MobileNetV1 classifier statically.

    Args:
        model (nn.Module): A classifier with a ``DSMobileNetV1`` backbone,
            a global-pooling neck and a ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network (its widths and BN row).
        fold_bn (bool): Fold BN into the convolutions. Defaults to True.

    Returns:
        StaticNet: a plain torch network in eval mode.
    """
    return build_mobilenet_v1(model, spec, StaticLayers(fold_bn))
