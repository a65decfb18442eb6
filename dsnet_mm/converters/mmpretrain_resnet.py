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

DSResNet also takes such a checkpoint directly (``init_cfg=dict(type=
'Pretrained', ...)``, ``load_state_dict``), with the same statistics rows;
this converter writes a whole classifier's checkpoint (head included) for
the tools.
"""
from typing import Callable, Dict, List, Optional

import torch

from dsnet_mm.models.backbones import DSResNet
from dsnet_mm.models.checkpoint_io import strip_module_prefix

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


def copy_matching(source: Dict[str, torch.Tensor],
                  own: Dict[str, torch.Tensor], name: str, layout: str,
                  prefix: str,
                  adapt: Optional[Callable[[str, torch.Tensor, torch.Tensor],
                                           torch.Tensor]] = None
                  ) -> Dict[str, torch.Tensor]:
    """Copy a source state dict onto a target's keys, one to one.

    Args:
        source (dict): The (renamed) source tensors.
        own (dict): The target's state dict (keys and shapes to fill).
        name (str): The target's name in the errors, e.g. ``'DSResNet'``.
        layout (str): The source layout that converts, for the errors.
        prefix (str): Key prefix of the output.
        adapt (Callable, optional): ``(key, value, target) -> value`` run
            before the shape check (e.g. to broadcast statistics).

    Raises:
        KeyError: naming the target keys the source lacks.
        ValueError: naming source keys the target has no place for, or
            shapes that differ.
    """
    missing = sorted(set(own) - set(source))
    if missing:
        raise KeyError(f'the state dict lacks {len(missing)} {name} '
                       f'key(s): {missing[:10]}')
    unexpected = sorted(set(source) - set(own))
    if unexpected:
        raise ValueError(f'{len(unexpected)} key(s) have no place in {name} '
                         f'(only {layout} layout converts): '
                         f'{unexpected[:10]}')
    out: Dict[str, torch.Tensor] = {}
    shapes: List[str] = []
    for key, target in own.items():
        value = source[key]
        if adapt is not None:
            value = adapt(key, value, target)
        if value.shape != target.shape:
            shapes.append(f'{key}: source {tuple(source[key].shape)} vs '
                          f'{name} {tuple(target.shape)}')
            continue
        out[prefix + key] = value.clone().to(target.dtype)
    if shapes:
        raise ValueError(f'the source differs in shape from the {name}: '
                         + '; '.join(shapes[:10]))
    return out


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

    def one_row_per_subnet(key: str, value: torch.Tensor,
                           target: torch.Tensor) -> torch.Tensor:
        # one statistics row per sub-network: the same stats in each
        if key.endswith(_STATS) and value.shape == target.shape[1:]:
            return value.unsqueeze(0).repeat(target.shape[0],
                                             *[1] * value.dim())
        return value

    out = copy_matching(source, own, 'DSResNet',
                        "mmpretrain's ResNet / ResNet_CIFAR", prefix,
                        one_row_per_subnet)
    for key, value in parts['head'].items():
        out[head_prefix + key] = value.clone()
    return out
