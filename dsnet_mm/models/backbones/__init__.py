# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_mobilenet_v1 import DSMobileNetV1
from .ds_resnet import DSBasicBlock, DSBottleneck, DSResNet
from .ds_vit import DSTransformerEncoderLayer, DSViT

__all__ = [
    'DSMobileNetV1', 'DSResNet', 'DSBasicBlock', 'DSBottleneck', 'DSViT',
    'DSTransformerEncoderLayer'
]
