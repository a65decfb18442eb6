# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Checkpoints that must match the model exactly: Stage I into Stage II,
and any checkpoint a run resumes from or loads."""
from typing import Dict, Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from .backbones.pretrained import partial_loading

# Stage I state that Stage II does not hold
_STAGE1_ONLY = ('teacher.', 'sandwich_iter')


def strip_module_prefix(state: Dict[str, torch.Tensor]
                        ) -> Dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that a DDP-saved state dict carries."""
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state.items()}


def read_state_dict(path: str,
                    map_location: str = 'cpu') -> Dict[str, torch.Tensor]:
    """The state dict of checkpoint ``path`` (its ``state_dict`` entry, or
    the file itself if it is a bare state dict), read with
    ``weights_only=True``."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    return ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt


def check_state_dict(own: Dict[str, torch.Tensor],
                     state: Dict[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError listing every key that differs between the two.

    Args:
        own (dict): The model's state dict (the keys expected).
        state (dict): The checkpoint's state dict.
        what (str): Names the checkpoint in the message.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model '
                    f'{tuple(own[k].shape)}' for k in set(own) & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        lines = [f'{what} does not match the model:']
        for title, keys in (('missing in checkpoint', missing),
                            ('not in the model', unexpected),
                            ('shape mismatch', shapes)):
            if keys:
                lines.append(f'  {title} ({len(keys)}): ' + ', '.join(keys))
        raise ValueError('\n'.join(lines))


def check_stage1_head(path: str, prefix: str) -> None:
    """Raise a ValueError unless Stage I checkpoint ``path`` holds the
    gate's slimming head (its keys under ``prefix``), for a Stage II that
    keeps it (``keep_stage1_head=True``)."""
    state = strip_module_prefix(read_state_dict(path))
    if not any(k.startswith(prefix) for k in state):
        raise ValueError(
            f'keep_stage1_head=True but the Stage I checkpoint {path} holds '
            f'no slimming head ({prefix}*): its supernet was trained '
            'without the gate. Set keep_stage1_head=False to start the '
            "head from its init (the gate's head_init)")


def load_stage1_weights(model: nn.Module, path: str,
                        new_prefixes: Sequence[str] = ()) -> None:
    """Load the student of a Stage I checkpoint into ``model``.

    Every key of the model must be in the checkpoint with the same shape,
    except those under ``new_prefixes`` (parts Stage II trains from its own
    init, such as the gate's slimming head: a Stage I supernet that already
    holds the gate, as DS-ViT's, never trained it, and its copy is skipped);
    checkpoint keys the model lacks are errors too, apart from Stage I's
    teacher and sampler state. The checkpoint is read
    with ``weights_only=True``.

    Raises:
        ValueError: listing every missing, unexpected or mis-shaped key.
    """
    state = strip_module_prefix(read_state_dict(path))
    state = {k: v for k, v in state.items()
             if not k.startswith((*_STAGE1_ONLY, *new_prefixes))}
    own = {k: v for k, v in model.state_dict().items()
           if not k.startswith(tuple(new_prefixes))}
    check_state_dict(own, state, f'Stage I checkpoint {path}')
    # checked above; the backbones' whole-loading check would refuse the
    # keys under new_prefixes
    with partial_loading(model):
        model.load_state_dict(state, strict=False)
    MMLogger.get_current_instance().info(
        f'loaded Stage I weights from {path} ({len(state)} tensors)')
