# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-sub-network complexity of a DS classifier or detector."""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
from mmengine.structures import InstanceData

from .subnet import SubnetSpec
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


def two_stage_complexity(model: nn.Module,
                         inputs: torch.Tensor) -> Dict[str, int]:
    """MAdds and parameters per image of an mmdet two-stage detector
    (``model.roi_head``) on one image ``inputs`` (``[1, C, H, W]``).

    Backbone, neck and the RPN head's raw outputs as for a single-stage
    detector (no proposal decoding or NMS), plus the RoI head at
    ``model.madds_proposals`` proposals per image (the DS detector's; else
    ``model.test_cfg.rpn.max_per_img``). Every layer of a RoI head runs
    per proposal, so it is counted on one proposal (the whole image) and
    that count multiplied; its RoI pooling is not counted.
    """
    proposals = getattr(model, 'madds_proposals', None) or \
        model.test_cfg['rpn']['max_per_img']
    feats = []

    def dense():
        x = model.extract_feat(inputs)
        feats.append(x)
        return model.rpn_head(x)

    cost = count_complexity(model, dense)
    height, width = inputs.shape[-2:]
    box = inputs.new_tensor([[0., 0., float(width), float(height)]])
    per_proposal = count_complexity(
        model.roi_head,
        lambda: model.roi_head.forward(feats[0], [InstanceData(bboxes=box)]))
    return dict(madds=cost['madds'] + proposals * per_proposal['madds'],
                params=cost['params'] + per_proposal['params'])


def subnet_complexity(model: nn.Module,
                      specs: Sequence[SubnetSpec],
                      shape: Sequence[int]) -> List[Dict]:
    """MAdds and parameters of each spec on one ``(C, H, W)`` image.

    Args:
        model (nn.Module): An mmpretrain classifier or an mmdet detector
            with a DS backbone (see :func:`network_forward`; a two-stage
            one: :func:`two_stage_complexity`).
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
                if hasattr(model, 'roi_head'):
                    cost = two_stage_complexity(model, inputs)
                else:
                    cost = count_complexity(
                        model, lambda: network_forward(model, inputs))
                if hasattr(model, 'bbox_head') or hasattr(model, 'roi_head'):
                    cost['backbone_madds'] = count_complexity(
                        model.backbone,
                        lambda: model.backbone(inputs))['madds']
            rows.append(dict(name=spec.name, index=spec.stats,
                             widths=dict(spec), **cost))
    finally:
        model.train(was_training)
    return rows
