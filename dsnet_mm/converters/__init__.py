# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Converters from other checkpoint layouts."""
from .mmpretrain_resnet import convert_mmpretrain_resnet
from .mmpretrain_vit import convert_mmpretrain_vit
from .official_dsnet import convert_official_dsnet

__all__ = [
    'convert_official_dsnet', 'convert_mmpretrain_resnet',
    'convert_mmpretrain_vit'
]
