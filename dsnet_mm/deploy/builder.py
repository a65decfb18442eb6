# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of any DS classifier as a plain torch network."""
from typing import List, Tuple

import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.static import StaticLayers, StaticNet, StaticPreGate
from dsnet_mm.static.cached import build_subnet
from .static_detector import build_detector


def static_subnet(model: nn.Module,
                  spec: SubnetSpec,
                  fold_bn: bool = True) -> nn.Module:
    """Sub-network ``spec`` of a DS-MobileNetV1, DS-ResNet or DS-ViT
    classifier as a plain torch network (BN folded unless
    ``fold_bn=False``), in eval mode; of a DS detector (a model with a
    ``bbox_head``), the :class:`~dsnet_mm.deploy.static_detector.
    StaticDetector` from images to the head's raw outputs."""
    if getattr(model, 'roi_head', None) is not None:
        raise ValueError(
            f'no static form of a two-stage detector '
            f'({type(model).__name__}): its RoI head runs on the proposals '
            'of each image, which a static export of the network does not '
            'hold; export a single-stage detector or the classifier')
    net = build_subnet(model, spec, StaticLayers(fold_bn))
    if getattr(model, 'bbox_head', None) is None:
        return net
    if not net.stage_ends:
        raise ValueError(f'no static detector for a '
                         f'{type(model.backbone).__name__} backbone: its '
                         'static builder does not mark the stages')
    return build_detector(model, spec, net)


def static_gate_parts(model: nn.Module, fold_bn: bool = True
                      ) -> Tuple[StaticPreGate, List[StaticNet]]:
    """A gated classifier cut at its gate, as plain torch networks.

    The window's members share every layer before the gate, which
    ``DSGateClassifier.forward_pre_gate`` runs with the BN statistics of the
    window's first member; each member runs its own widths and statistics
    from the gate on. The widths at the cut are the shared ones, so every
    member's part reads the same features.

    Args:
        model (nn.Module): A ``DSGateClassifier``.
        fold_bn (bool): Fold BN into the convolutions. Defaults to True.

    Returns:
        tuple: the part before the gate (images to the features after the
        gate's attention and the slimming logits), and the part after it of
        each window member in window order (those features to class logits).
    """
    layers = StaticLayers(fold_bn)
    pre = build_subnet(model, model.window[0], layers).split_at_gate()[0]
    return pre, [build_subnet(model, spec, layers).split_at_gate()[1]
                 for spec in model.window]


def input_normalisation(model: nn.Module) -> dict:
    """What an exported network expects of its input: images normalised as
    ``(x - mean) / std`` by the model's data preprocessor (``mean`` and
    ``std`` per channel, None where it does not normalise)."""
    pre = model.data_preprocessor
    return dict(
        mean=pre.mean.flatten().tolist() if pre._enable_normalize else None,
        std=pre.std.flatten().tolist() if pre._enable_normalize else None)
