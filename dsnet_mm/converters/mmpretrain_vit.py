# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Convert an mmpretrain ``VisionTransformer`` classifier into DSViT's.

DSViT keeps mmpretrain's names for every backbone parameter
(``patch_embed.projection``, ``cls_token``, ``pos_embed``,
``layers.{i}.ln1``, ``layers.{i}.attn.qkv``, ``layers.{i}.attn.proj``,
``layers.{i}.ln2``, ``layers.{i}.ffn.layers.0.0``, ``layers.{i}.ffn.layers.1``,
the final ``ln1`` and the ``avg_featmap`` norm ``ln2``) and the qkv layout
(rows ``[q | k | v]``, each split into heads), so those weights map one to
one at the same shape (a backbone checkpoint also loads into DSViT directly,
by ``Pretrained`` or ``load_from``). The one renamed module is the head's: a
``VisionTransformerClsHead``'s ``layers.head`` is a ``DSLinearClsHead``'s
``fc``.
"""
from typing import Dict, Tuple

import torch

from dsnet_mm.models.backbones import DSViT
from .mmpretrain_resnet import copy_matching, split_classifier_state

_HEAD_RENAMES = (('layers.head.', 'fc.'), )


def _rename(key: str, renames: Tuple[Tuple[str, str], ...]) -> str:
    for old, new in renames:
        if old in key:
            return key.replace(old, new, 1)
    return key


def convert_mmpretrain_vit(state: Dict[str, torch.Tensor],
                           backbone: DSViT,
                           prefix: str = 'backbone.',
                           head_prefix: str = 'head.'
                           ) -> Dict[str, torch.Tensor]:
    """Convert an mmpretrain ``VisionTransformer`` state dict.

    Args:
        state (dict): A VisionTransformer backbone state dict, or a full
            ``ImageClassifier`` one (then its ``head.*`` weights are
            converted too: ``head.layers.head.*`` of a
            ``VisionTransformerClsHead`` become ``head.fc.*``, other keys are
            kept).
        backbone (DSViT): The target; its arch, patch size, image size and
            out type must be the source's.
        prefix (str): Key prefix of the backbone in the output.
        head_prefix (str): Key prefix of the head in the output.

    Returns:
        dict: The converted state dict.

    Raises:
        KeyError: naming the DSViT keys the state dict lacks.
        ValueError: naming source keys DSViT has no place for (e.g. the
            ``dist_token`` of a distilled DeiT or a ``pre_norm``) or shapes
            that differ (e.g. a position embedding for another image size).
    """
    parts = split_classifier_state(state)
    source = parts['backbone']
    out = copy_matching(source, backbone.state_dict(), 'DSViT',
                        "mmpretrain's VisionTransformer", prefix)
    for key, value in parts['head'].items():
        out[head_prefix + _rename(key, _HEAD_RENAMES)] = value.clone()
    return out
