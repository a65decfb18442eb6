# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of a DS detector as a plain torch network up to the head
outputs."""
import copy
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.models.subnet import SubnetSpec
from .static_layers import StaticNet


class StaticDetector(nn.Module):
    """Images to the dense head's raw outputs at one sub-network.

    The backbone is the static sub-network (BN folded or kept) tapped at the
    end of each ``out_indices`` stage; each tap is zero-padded to the widest
    width its consumer was built for, as the DS detector does
    (:func:`~dsnet_mm.models.detectors.pad_to`); the neck and head are
    copies of the detector's own, in eval mode. Box decoding and NMS are
    left to the caller (they are mmdet's ``predict_by_feat``), so an
    exported graph holds convolutions and element-wise ops only and runs
    without dsnet_mm, mmdet or mmcv.

    Returns:
        tuple[torch.Tensor]: the class scores of every level, then the box
        regressions of every level (mmdet's ``(cls_scores, bbox_preds)``
        flattened).
    """

    def __init__(self, backbone: StaticNet, out_indices: Sequence[int],
                 widths: Sequence[int], neck: nn.Module,
                 bbox_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(backbone.stage_ends[i] - 1 for i in out_indices)
        self.widths = tuple(widths)
        self.neck = neck
        self.bbox_head = bbox_head
        self.eval()

    def features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The backbone's tapped outputs, zero-padded to the widest."""
        x = self.backbone.stem(x)
        feats = []
        for i, layer in enumerate(self.backbone.body):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return tuple(
            F.pad(f, (0, 0, 0, 0, 0, w - f.shape[1])) if f.shape[1] < w
            else f for f, w in zip(feats, self.widths))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.features(x)
        if self.neck is not None:
            feats = self.neck(feats)
        cls_scores, bbox_preds = self.bbox_head(feats)[:2]
        return (*cls_scores, *bbox_preds)


def build_detector(model: nn.Module, spec: SubnetSpec,
                   backbone: StaticNet) -> StaticDetector:
    """Sub-network ``spec`` of a DS detector (``model``: a
    ``DSSingleStageDetector``) on its static ``backbone``."""
    bb = model.backbone
    neck = copy.deepcopy(model.neck) if model.with_neck else None
    return StaticDetector(backbone, bb.out_indices, bb.out_widths, neck,
                          copy.deepcopy(model.bbox_head))


def detector_output_names(model: nn.Module) -> Tuple[str, ...]:
    """ONNX output names of a :class:`StaticDetector`: ``cls_score_<l>`` for
    every level, then ``bbox_pred_<l>``."""
    levels = len(model.bbox_head.prior_generator.strides)
    return tuple(f'{kind}_{level}' for kind in ('cls_score', 'bbox_pred')
                 for level in range(levels))
