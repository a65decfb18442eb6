# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Weight-slicing primitives: pure torch, no OpenMMLab imports.

Every op runs on a dense prefix of its stored weights. The input width comes
from the input tensor, the output width and the statistics row from explicit
arguments, so an op keeps no state that a second forward could trip on.
Pooling needs no slicing: ``nn.AdaptiveAvgPool2d`` runs at any width. The
ViT ops (:mod:`.vit`) read channels from the last dimension.
"""
from .conv import DSConv2d
from .linear import DSLinear
from .norm import DSBatchNorm2d, cumulative_bn_stats, unfolded_bn
from .padding import used_channels, zero_pad_channels
from .se import DSSqueezeExcite, TokenPool
from .vit import (DSMLP, AttentionCore, DSLayerNorm, DSMultiheadAttention,
                  DSQKVLinear, rejoin_idle)
from .weight_cache import (InferenceCacheBlock, InferenceCacheUser,
                           inference_cache)

__all__ = [
    'DSConv2d', 'DSLinear', 'DSBatchNorm2d', 'DSSqueezeExcite',
    'cumulative_bn_stats', 'unfolded_bn', 'inference_cache',
    'InferenceCacheBlock', 'InferenceCacheUser', 'DSLayerNorm', 'DSQKVLinear', 'AttentionCore',
    'DSMultiheadAttention', 'DSMLP', 'TokenPool', 'rejoin_idle',
    'zero_pad_channels', 'used_channels'
]
