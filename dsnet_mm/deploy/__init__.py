# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks for deployment (and as the speed limit of slicing)."""
from .allocator import reuse_freed_memory
from .builder import build_subnet, static_subnet
from .static_mbnet import (StaticLayers, StaticMobileNetV1,
                           build_mobilenet_v1, fold_conv_bn,
                           static_mobilenet_v1)
from .static_resnet import StaticResNet, build_resnet, static_resnet
from .static_vit import StaticViT, build_vit

__all__ = [
    'build_subnet', 'static_subnet', 'StaticLayers', 'StaticMobileNetV1',
    'build_mobilenet_v1', 'fold_conv_bn', 'static_mobilenet_v1',
    'StaticResNet', 'build_resnet', 'static_resnet', 'reuse_freed_memory',
    'StaticViT', 'build_vit'
]
