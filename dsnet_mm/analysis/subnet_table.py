# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-sub-network complexity of a DS classifier or detector."""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from .complexity import count_complexity


def classifier_forward(model: nn.Module, inputs: torch.Tensor):
    """Backbone, neck and head of an mmpretrain classifier, no post-process."""
    feats = model.extract_feat(inputs)
    return model.head(feats) if getattr(model, 'with_head', False) else feats


def network_forward(model: nn.Module, inputs: torch.Tensor):
    """What a model's MAdds count: backbone, neck and head, no
    post-processing. For an mmdet detector (a model with a ``bbox_head``)
    that is its ``'tensor'`` mode (``_forward``: the head's raw outputs, no
    box decoding or NMS, as mmdet's ``get_flops.py`` counts); for a
    classifier, :func:`classifier_forward`."""
    if hasattr(model, 'bbox_head'):
        return model._forward(inputs)
    return classifier_forward(model, inputs)


def subnet_complexity(model: nn.Module,
                      specs: Sequence[SubnetSpec],
                      shape: Sequence[int]) -> List[Dict]:
    """MAdds and parameters of each spec on one ``(C, H, W)`` image.

    Args:
        model (nn.Module): An mmpretrain classifier or an mmdet detector
            with a DS backbone (see :func:`network_forward`).
        specs (Sequence[SubnetSpec]): Sub-networks to count.
        shape (Sequence[int]): ``(C, H, W)`` of the input image.

    Returns:
        list[dict]: ``{'name', 'index', 'widths', 'madds', 'params'}`` each;
        for a detector also ``backbone_madds`` (the backbone alone: the
        figure backbone papers quote, beside the whole detector's).
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
                    model, lambda: network_forward(model, inputs))
                if hasattr(model, 'bbox_head'):
                    cost['backbone_madds'] = count_complexity(
                        model.backbone,
                        lambda: model.backbone(inputs))['madds']
            rows.append(dict(name=spec.name, index=spec.index,
                             widths=dict(spec), **cost))
    finally:
        model.train(was_training)
    return rows
