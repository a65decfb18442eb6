# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Load mmpretrain ``ResNet`` weights into the full-width DSResNet.

DSResNet keeps mmpretrain's layer names (``conv1``, ``bn1``,
``layer{i}.{j}.conv{k}``, ``layer{i}.{j}.downsample.{0,1}``), so every
weight maps one to one at the same shape. A BN keeps one statistics row per
sub-network here: the static network's running mean and variance go into
every row. The ``largest`` row is then exact (the converted supernet at its
largest *is* the static ResNet); the narrower rows are a starting point for
``tools/calibrate_bn.py``. The SE / gate of a stage's first block, which a
static ResNet has no weights for, keeps its initialisation.
"""
from typing import Dict, List

import torch

from dsnet_mm.models.backbones import DSResNet
from dsnet_mm.models.classifiers.stage1_loading import strip_module_prefix

_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


def split_classifier_state(state: Dict[str, torch.Tensor]
                           ) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{'backbone': ..., 'head': ...}`` of a backbone or classifier state.

    A full ``ImageClassifier`` state dict (keys ``backbone.*``,
    ``head.fc.*``) is split; a bare backbone state dict is the backbone.
    """
    state = strip_module_prefix(state)
    if not any(k.startswith('backbone.') for k in state):
        return dict(backbone=dict(state), head={})
    parts: Dict[str, Dict[str, torch.Tensor]] = dict(backbone={}, head={})
    for key, value in state.items():
        for part in parts:
            if key.startswith(part + '.'):
                parts[part][key[len(part) + 1:]] = value
    return parts


def convert_mmpretrain_resnet(state: Dict[str, torch.Tensor],
                              backbone: DSResNet,
                              prefix: str = 'backbone.',
                              head_prefix: str = 'head.'
                              ) -> Dict[str, torch.Tensor]:
    """Convert an mmpretrain ``ResNet`` / ``ResNet_CIFAR`` state dict.

    Args:
        state (dict): A ResNet backbone state dict, or a full
            ``ImageClassifier`` one (then its ``head.*`` weights, e.g.
            ``head.fc.weight``, are converted too).
        backbone (DSResNet): The target; its depth, widths and stem must be
            the source's.
        prefix (str): Key prefix of the backbone in the output.
        head_prefix (str): Key prefix of the head in the output.

    Returns:
        dict: The converted state dict (without the keys of an SE / gate,
        which a static ResNet lacks).

    Raises:
        KeyError: naming the backbone keys the state dict lacks.
        ValueError: naming source keys DSResNet has no place for (e.g. a
            ``deep_stem`` ResNetV1c) or shapes that differ.
    """
    parts = split_classifier_state(state)
    source = parts['backbone']
    own = {k: v for k, v in backbone.state_dict().items()
           if '.se.' not in k}
    missing = sorted(set(own) - set(source))
    if missing:
        raise KeyError(f'the state dict lacks {len(missing)} DSResNet '
                       f'key(s): {missing[:10]}')
    unexpected = sorted(set(source) - set(own))
    if unexpected:
        raise ValueError(
            f'{len(unexpected)} key(s) have no place in DSResNet (only '
            "mmpretrain's ResNet / ResNet_CIFAR layout converts): "
            f'{unexpected[:10]}')
    out: Dict[str, torch.Tensor] = {}
    shapes: List[str] = []
    for key, target in own.items():
        value = source[key]
        if key.endswith(_STATS):
            # one statistics row per sub-network: the same stats in each
            if value.shape == target.shape[1:]:
                value = value.unsqueeze(0).repeat(target.shape[0],
                                                  *[1] * value.dim())
        if value.shape != target.shape:
            shapes.append(f'{key}: source {tuple(source[key].shape)} vs '
                          f'DSResNet {tuple(target.shape)}')
            continue
        out[prefix + key] = value.clone().to(target.dtype)
    if shapes:
        raise ValueError('the source differs in shape from the DSResNet: '
                         + '; '.join(shapes[:10]))
    for key, value in parts['head'].items():
        out[head_prefix + key] = value.clone()
    return out
