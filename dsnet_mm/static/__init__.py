# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks: plain torch layers holding copies of a sub-network's
sliced weights. The layer below the models: it imports only
:mod:`dsnet_mm.ops`; each DS block builds its own static form from these
pieces (``build_static``), and :mod:`dsnet_mm.deploy` exports the result."""
from .blocks import (StaticAttention, StaticClsTokenHead, StaticMLP,
                     StaticResBlock, StaticScale, StaticViTBlock,
                     StaticViTEmbed)
from .builder import LayerBuilder, StaticLayers, fold_conv_bn, holding
from .modules import (StaticNet, StaticPoolHead, StaticPreGate,
                      StaticSqueezeExcite, StaticTokenSE, build_se, pool_head)

__all__ = [
    'LayerBuilder', 'StaticLayers', 'fold_conv_bn', 'holding', 'StaticNet',
    'StaticPoolHead', 'StaticPreGate', 'StaticSqueezeExcite', 'StaticTokenSE',
    'build_se', 'pool_head', 'StaticResBlock', 'StaticAttention', 'StaticMLP', 'StaticScale',
    'StaticViTBlock', 'StaticViTEmbed', 'StaticClsTokenHead'
]
