# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Map the reference DS-Net release's state dict onto DS-MobileNetV1.

Reference layout (``docs/reference/dsnet.md``): ``conv_stem``, ``bn1``,
``blocks.{s}.first_block.*`` and ``blocks.{s}.residual_blocks.{j}.*`` with
``conv_dw``, ``bn1``, ``gate.conv_reduce``, ``gate.conv_expand``,
``conv_pw``, ``bn2``; the gate's slimming head ``gate.gate.0``; the
``classifier``. Each BN keeps one ``aux_bn.{i}`` per entry of its channel
list: running statistics for every width, the affine parameters only in the
last (widest) entry. Here statistics are kept per sub-network, so each
sub-network's row takes the entry of the width it runs that BN at.
"""
from typing import Dict, List

import torch

from dsnet_mm.models.backbones import DSMobileNetV1
from dsnet_mm.models.checkpoint_io import strip_module_prefix
from dsnet_mm.ops import DSBatchNorm2d


def _ref_prefix(stage: int, block: int) -> str:
    if block == 0:
        return f'blocks.{stage}.first_block.'
    return f'blocks.{stage}.residual_blocks.{block - 1}.'


def _convert_bn(state, ref: str, bn: DSBatchNorm2d, group: str,
                backbone: DSMobileNetV1, out: Dict[str, torch.Tensor],
                ours: str) -> None:
    specs = [*backbone.space.subnets, backbone.space.largest]
    choices: List[int] = sorted({s[group] for s in specs})
    last = f'{ref}aux_bn.{len(choices) - 1}.'
    width = bn.num_features
    out[ours + 'weight'] = state[last + 'weight'][:width].clone()
    out[ours + 'bias'] = state[last + 'bias'][:width].clone()
    mean = bn.running_mean.detach().clone().zero_()
    var = bn.running_var.detach().clone().fill_(1)
    tracked = bn.num_batches_tracked.detach().clone().zero_()
    for spec in specs:
        i = choices.index(spec[group])
        w = spec[group]
        mean[spec.stats, :w] = state[f'{ref}aux_bn.{i}.running_mean'][:w]
        var[spec.stats, :w] = state[f'{ref}aux_bn.{i}.running_var'][:w]
        key = f'{ref}aux_bn.{i}.num_batches_tracked'
        if key in state:
            tracked[spec.stats] = state[key]
    out[ours + 'running_mean'] = mean
    out[ours + 'running_var'] = var
    out[ours + 'num_batches_tracked'] = tracked


def convert_official_dsnet(state: Dict[str, torch.Tensor],
                           backbone: DSMobileNetV1,
                           prefix: str = 'backbone.',
                           head_prefix: str = 'head.fc.'
                           ) -> Dict[str, torch.Tensor]:
    """Convert a reference state dict for ``backbone`` (and its classifier).

    Args:
        state (dict): The reference ``state_dict`` (or ``state_dict_ema``).
        backbone (DSMobileNetV1): The target backbone; its sub-network space
            gives each BN's channel list.
        prefix (str): Key prefix of the backbone in the output.
        head_prefix (str): Key prefix of the classifier in the output.

    Returns:
        dict: The converted state dict.

    Raises:
        KeyError: naming the reference keys the state dict lacks.
    """
    state = strip_module_prefix(state)
    out: Dict[str, torch.Tensor] = {}
    missing: List[str] = []

    def take(ref_key: str, our_key: str) -> None:
        if ref_key in state:
            out[prefix + our_key] = state[ref_key].clone()
        else:
            missing.append(ref_key)

    def bn(ref: str, module: DSBatchNorm2d, group: str, ours: str) -> None:
        try:
            _convert_bn(state, ref, module, group, backbone, out,
                        prefix + ours)
        except KeyError as e:
            missing.append(str(e.args[0]))

    take('conv_stem.weight', 'stem.conv.weight')
    bn('bn1.', backbone.stem.bn, 'stem', 'stem.bn.')
    for s, blocks in enumerate(backbone.layers):
        for j, block in enumerate(blocks):
            ref, ours = _ref_prefix(s, j), f'layers.{s}.{j}.'
            take(ref + 'conv_dw.weight', ours + 'conv_dw.weight')
            bn(ref + 'bn1.', block.bn1, block.in_group, ours + 'bn1.')
            for part in ('conv_reduce', 'conv_expand'):
                for p in ('weight', 'bias'):
                    take(f'{ref}gate.{part}.{p}', f'{ours}se.{part}.{p}')
            if hasattr(block.se, 'slim_head'):
                take(ref + 'gate.gate.0.weight',
                     ours + 'se.slim_head.weight')
            take(ref + 'conv_pw.weight', ours + 'conv_pw.weight')
            bn(ref + 'bn2.', block.bn2, block.group, ours + 'bn2.')
    for p in ('weight', 'bias'):
        if f'classifier.{p}' in state:
            out[head_prefix + p] = state[f'classifier.{p}'].clone()
        else:
            missing.append(f'classifier.{p}')
    if missing:
        raise KeyError(f'the state dict lacks {len(missing)} key(s) of the '
                       f'reference layout: {missing[:10]}')
    return out
