# Copyright (c) dsnet_mm contributors. All rights reserved.
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSLinear


@MODELS.register_module()
class DSLinearClsHead(LinearClsHead):
    """``LinearClsHead`` whose classifier reads a prefix of its input features.

    ``in_channels`` is the widest feature width; a sub-network's narrower
    features use the first columns of the stored weight (a view). The number
    of classes never changes.
    """

    def __init__(self, num_classes: int, in_channels: int, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.fc = DSLinear(in_channels, num_classes)
