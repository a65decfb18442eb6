# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_mobilenet_v1 import DSMobileNetV1
from .ds_resnet import DSResNet
from .ds_resnet_blocks import DSBasicBlock, DSBottleneck
from .ds_resnet_variants import DSResNet_CIFAR, DSResNetV1c, DSResNetV1d
from .ds_vit import DSViT
from .ds_vit_layers import DSTransformerEncoderLayer

__all__ = [
    'DSMobileNetV1', 'DSResNet', 'DSResNet_CIFAR', 'DSResNetV1c',
    'DSResNetV1d', 'DSBasicBlock', 'DSBottleneck', 'DSViT',
    'DSTransformerEncoderLayer'
]
