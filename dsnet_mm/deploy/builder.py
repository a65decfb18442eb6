# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of any DS classifier as a plain torch network."""
import torch.nn as nn

from dsnet_mm.models.backbones import DSMobileNetV1, DSResNet, DSViT
from dsnet_mm.models.subnet import SubnetSpec
from .static_mbnet import StaticLayers, build_mobilenet_v1
from .static_resnet import build_resnet
from .static_vit import build_vit

_BUILDERS = ((DSMobileNetV1, build_mobilenet_v1), (DSResNet, build_resnet),
             (DSViT, build_vit))


def build_subnet(model: nn.Module, spec: SubnetSpec, layers) -> nn.Module:
    """Walk the classifier's DS backbone at ``spec`` with the layer builder
    ``layers`` (see :class:`StaticLayers`)."""
    for backbone, build in _BUILDERS:
        if isinstance(model.backbone, backbone):
            return build(model, spec, layers)
    supported = [b.__name__ for b, _ in _BUILDERS]
    raise ValueError(f'no static builder for a '
                     f'{type(model.backbone).__name__} backbone; supported: '
                     f'{supported}')


def static_subnet(model: nn.Module,
                  spec: SubnetSpec,
                  fold_bn: bool = True) -> nn.Module:
    """Sub-network ``spec`` of a DS-MobileNetV1, DS-ResNet or DS-ViT
    classifier as a plain torch network (BN folded unless
    ``fold_bn=False``), in eval mode."""
    return build_subnet(model, spec, StaticLayers(fold_bn))
