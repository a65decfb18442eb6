# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Load mmpretrain ``VisionTransformer`` weights into the full-width DSViT.

DSViT keeps mmpretrain's names (``patch_embed.projection``, ``cls_token``,
``pos_embed``, ``layers.{i}.ln1``, ``layers.{i}.attn.qkv``,
``layers.{i}.attn.proj``, ``layers.{i}.ln2``, the final ``ln1`` and the
``avg_featmap`` norm ``ln2``) and the qkv layout (rows ``[q | k | v]``,
each split into heads), so those weights map one to one at the same shape.
The one renamed module is the MLP: mmpretrain's ``ffn.layers.0.0`` (fc1
inside its Sequential with the activation) and ``ffn.layers.1`` (fc2) are
DSViT's ``ffn.fc1`` and ``ffn.fc2``. A ``VisionTransformerClsHead``'s
``layers.head`` is a ``DSLinearClsHead``'s ``fc``.
"""
from typing import Dict, Tuple

import torch

from dsnet_mm.models.backbones import DSViT
from .mmpretrain_resnet import copy_matching, split_classifier_state

# mmpretrain key part -> DSViT key part
_RENAMES = (('.ffn.layers.0.0.', '.ffn.fc1.'), ('.ffn.layers.1.', '.ffn.fc2.'))
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
    source = {_rename(k, _RENAMES): v for k, v in parts['backbone'].items()}
    out = copy_matching(source, backbone.state_dict(), 'DSViT',
                        "mmpretrain's VisionTransformer", prefix)
    for key, value in parts['head'].items():
        out[head_prefix + _rename(key, _HEAD_RENAMES)] = value.clone()
    return out
