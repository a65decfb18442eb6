# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ResNet's configuration: mmpretrain ``ResNet``'s default
initialisation with its layer kinds reaching the DS layers, the default
slimming ratios, the checks of the arguments that configure the blocks and
the sub-network list, and the conversion of a static ResNet's checkpoint at
load."""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from dsnet_mm.ops import DSBatchNorm2d
from dsnet_mm.ops.utils import (check_bool, check_float, check_int,
                                check_keys, check_type)
from .ds_resnet_blocks import DSBasicBlock
from .pretrained import with_ds_layer_kinds

InitCfg = Union[dict, List[dict], None]

# mmpretrain ResNet's default initialisation
DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
]

def ds_init_cfg(init_cfg: InitCfg) -> InitCfg:
    """``init_cfg`` with its torch layer kinds extended to the DS layers
    (:func:`~dsnet_mm.models.backbones.pretrained.with_ds_layer_kinds`),
    except that ``'Conv2d'`` stops naming torch's own ``nn.Conv2d``: the
    only one of a DS-ResNet is a gate's slimming head, which keeps the
    initialisation its ``head_init`` chose."""
    cfg = with_ds_layer_kinds(init_cfg)
    if isinstance(cfg, list):
        return [ds_init_cfg(c) if 'layer' in c else c for c in cfg]
    if isinstance(cfg, dict) and 'layer' in cfg:
        layers = [cfg['layer']] if isinstance(cfg['layer'], str) \
            else cfg['layer']
        if 'DSConv2d' in layers:
            return dict(cfg, layer=[k for k in layers if k != 'Conv2d'])
    return cfg


# DS-Net's description of DS-ResNet: every stage slimmed by one ratio rho;
# our reading is rho in [0.25 : 0.25 : 1.0] (no DS-ResNet code was released
# and the paper's lists were not available to us:
# docs/reference/dsnet.md, "DS-ResNet")
DEFAULT_RATIOS = (0.25, 0.5, 0.75, 1.0)


def check_expansion(block: type, expansion: Optional[int]) -> int:
    """The residual blocks' expansion: the block's own, or ``expansion``
    (bottleneck blocks only)."""
    if expansion is None:
        return block.expansion
    check_int('expansion', expansion, 1)
    if block is DSBasicBlock and expansion != 1:
        raise ValueError(
            f'expansion={expansion} does not apply to the basic blocks '
            'of ResNet-18/34, whose two convs share one width: use '
            'expansion=None (or 1)')
    return expansion

def check_norm_cfg(norm_cfg: dict, norm_types: Sequence[str]) -> dict:
    """The BN keyword arguments of ``norm_cfg`` (of type ``norm_types``)."""
    check_type('norm_cfg', norm_cfg, dict, "a dict such as dict(type='BN')")
    check_keys('norm_cfg', norm_cfg, ('type', ),
               ('requires_grad', 'eps', 'momentum'))
    if norm_cfg['type'] in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
        raise ValueError(
            f"norm_cfg.type={norm_cfg['type']!r}: the BNs of a DS "
            'backbone are DSBatchNorm2d, which keep one statistics row '
            'per sub-network and do not synchronise them across GPUs: '
            "use norm_cfg=dict(type='BN')")
    if norm_cfg['type'] not in norm_types:
        raise ValueError(
            f"norm_cfg.type={norm_cfg['type']!r} cannot apply: the "
            'norms of a DS backbone are DSBatchNorm2d (one statistics '
            f"row per sub-network); allowed: {list(norm_types)}")
    check_bool('norm_cfg.requires_grad',
               norm_cfg.get('requires_grad', True))
    return {k: norm_cfg[k] for k in ('eps', 'momentum') if k in norm_cfg}

def check_conv_cfg(conv_cfg: Optional[dict]) -> None:
    """A conv config is the plain conv's (the only one a DS conv slices)."""
    if conv_cfg is None or conv_cfg == dict(type='Conv2d') or \
            conv_cfg == dict(type='Conv'):
        return
    raise ValueError(
        f'conv_cfg={conv_cfg!r} cannot apply: the convs of a DS '
        'backbone are DSConv2d, sliced to each sub-network\'s widths; '
        'use conv_cfg=None')

def ratio_subnets(ratios: Sequence[float], fixed: Mapping[str, float],
                  max_widths: Dict[str, int],
                  owner: Dict[str, str]) -> List[Dict[str, int]]:
    """Explicit widths of the uniform ratio list (each group's stage in
    ``owner``; ``fixed`` ratios per stage)."""
    check_type('ratios', ratios, (list, tuple),
               'a list of slimming ratios')
    ratios = list(ratios)
    for k, r in enumerate(ratios):
        check_float(f'ratios[{k}]', r, 0, 1, low_open=True)
    if not ratios or any(a >= b for a, b in zip(ratios, ratios[1:])):
        raise ValueError('ratios must be increasing slimming ratios in '
                         f'(0, 1], got {ratios!r}')
    stages = sorted(set(owner.values()), key=list(owner.values()).index)
    check_type('fixed_ratios', fixed, Mapping,
               'a dict {stage: ratio}')
    unknown = [s for s in fixed if s not in stages]
    if unknown:
        raise ValueError(f'fixed_ratios names unknown stage(s) {unknown};'
                         f' allowed: {stages}')
    for s, r in fixed.items():
        check_float(f'fixed_ratios.{s}', r, 0, 1, low_open=True)
    if len(ratios) > 1 and set(fixed) == set(stages):
        raise ValueError(
            f'fixed_ratios fixes every stage {stages}: the ratios '
            f'{ratios} would give identical sub-networks')
    return [{
        g: max(1, int(fixed.get(owner[g], r) * w + 0.5))
        for g, w in max_widths.items()
    } for r in ratios]


def convert_static_resnet(module: nn.Module, state: Dict[str, torch.Tensor],
                          prefix: str) -> None:
    """Turn the keys under ``prefix`` of a static ResNet's state dict into
    ``module``'s, in place: a timm deep stem (``conv1.0``, ``conv1.1``,
    ``conv1.3``, ``conv1.4``, ``conv1.6``, ``bn1``) renamed to
    ``stem.{0,1,2}.{conv,bn}``, and each static BN's running mean and
    variance (one row) repeated into every sub-network's row (a missing
    ``num_batches_tracked``, as in old torchvision files, counts 0). A
    supernet's own keys are left as they are."""
    if module.deep_stem and prefix + 'conv1.0.weight' in state:
        renames = {'conv1.0.': 'stem.0.conv.', 'conv1.1.': 'stem.0.bn.',
                   'conv1.3.': 'stem.1.conv.', 'conv1.4.': 'stem.1.bn.',
                   'conv1.6.': 'stem.2.conv.', 'bn1.': 'stem.2.bn.'}
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in renames.items():
                if rest.startswith(old):
                    state[prefix + new + rest[len(old):]] = state.pop(key)
                    break
    for name, m in module.named_modules():
        if not isinstance(m, DSBatchNorm2d):
            continue
        base = f'{prefix}{name}.'
        rows = m.num_subnets
        for stat in ('running_mean', 'running_var'):
            value = state.get(base + stat)
            if value is not None and value.dim() == 1:
                state[base + stat] = value.unsqueeze(0).repeat(rows, 1)
        count = state.get(base + 'num_batches_tracked')
        if count is not None and count.dim() == 0:
            state[base + 'num_batches_tracked'] = count.repeat(rows)
        elif count is None and base + 'running_mean' in state:
            state[base + 'num_batches_tracked'] = torch.zeros(
                rows, dtype=torch.long)
