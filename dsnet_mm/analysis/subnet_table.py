# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-sub-network complexity of a DS classifier."""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from .complexity import count_complexity


def classifier_forward(model: nn.Module, inputs: torch.Tensor):
    """Backbone, neck and head of an mmpretrain classifier, no post-process."""
    feats = model.extract_feat(inputs)
    return model.head(feats) if getattr(model, 'with_head', False) else feats


def subnet_complexity(model: nn.Module,
                      specs: Sequence[SubnetSpec],
                      shape: Sequence[int]) -> List[Dict]:
    """MAdds and parameters of each spec on one ``(C, H, W)`` image.

    Args:
        model (nn.Module): An mmpretrain classifier with a DS backbone.
        specs (Sequence[SubnetSpec]): Sub-networks to count.
        shape (Sequence[int]): ``(C, H, W)`` of the input image.

    Returns:
        list[dict]: ``{'name', 'index', 'widths', 'madds', 'params'}`` each.
    """
    param = next(model.parameters())
    inputs = torch.zeros(1, *shape, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for spec in specs:
            with model.backbone.subnet(spec):
                cost = count_complexity(
                    model, lambda: classifier_forward(model, inputs))
            rows.append(dict(name=spec.name, index=spec.index,
                             widths=dict(spec), **cost))
    finally:
        model.train(was_training)
    return rows
