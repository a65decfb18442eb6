# Copyright (c) dsnet_mm contributors. All rights reserved.
from typing import List

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.ops import DSLinear
from dsnet_mm.ops.utils import check_int


@MODELS.register_module()
class DSLinearClsHead(LinearClsHead):
    """``LinearClsHead`` whose classifier reads a prefix of its input features.

    ``in_channels`` is the widest feature width; a sub-network's narrower
    features use the first columns of the stored weight (a view). The number
    of classes never changes. A label outside ``0..num_classes - 1`` stops
    the loss with a ``ValueError`` naming the sample's file (or
    ``sample_idx``) and ``gt_label``, before any backward of the step,
    instead of an ``IndexError`` (CPU) or a device assert (CUDA) deep in the
    cross-entropy. The loss is computed from the scores in float32 (bfloat16
    ones under autocast).
    """

    def __init__(self, num_classes: int, in_channels: int, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.fc = DSLinear(in_channels, num_classes)

    def _get_loss(self, cls_score: torch.Tensor,
                  data_samples: List[DataSample], **kwargs) -> dict:
        if 'gt_score' not in data_samples[0]:
            labels = torch.cat([s.gt_label for s in data_samples])
            bad = ((labels < 0) | (labels >= self.num_classes)).nonzero()
            if len(bad):
                i = int(bad[0, 0])
                meta = data_samples[i].metainfo
                where = meta.get('img_path',
                                 f"sample_idx={meta.get('sample_idx')}")
                check_int(f'{where}: gt_label', int(labels[i]), 0,
                          self.num_classes - 1)
        return super()._get_loss(cls_score.float(), data_samples, **kwargs)
