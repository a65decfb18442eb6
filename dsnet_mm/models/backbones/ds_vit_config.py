# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT's configuration: mmpretrain's architectures by name, the default
sub-network ladders, the checks of the arguments that configure blocks and
sub-networks, and the conversion of a checkpoint's keys at load."""
import math
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.utils import resize_pos_embed

from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_keys, check_type)
from ..subnet import SubnetSpace, SubnetsCfg
from .ds_vit_layers import DIMS

ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')
# the position embedding's interpolation modes (``F.interpolate`` on 2-D)
INTERPOLATE_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic',
                     'area')
OUT_TYPES = ('cls_token', 'featmap', 'avg_featmap', 'raw')
# the keys a ``layer_cfgs`` entry may set, and those allowed at one value
LAYER_KEYS = ('drop_rate', 'attn_drop_rate', 'drop_path_rate',
              'qkv_bias', 'layer_scale_init_value', 'act_cfg',
              'norm_cfg', 'num_fcs', 'ffn_type', 'init_cfg')
DEIT_TINY = dict(embed_dims=192, num_layers=12, num_heads=3,
                 feedforward_channels=768)
DEIT_SMALL = dict(embed_dims=384, num_layers=12, num_heads=6,
                  feedforward_channels=1536)
DEIT_BASE = dict(embed_dims=768, num_layers=12, num_heads=12,
                 feedforward_channels=3072)
# the architectures of mmpretrain 1.2.0's VisionTransformer, by name
ARCH_ZOO = {
    **dict.fromkeys(['s', 'small'], dict(
        embed_dims=768, num_layers=8, num_heads=8,
        feedforward_channels=2304)),
    **dict.fromkeys(['b', 'base'], DEIT_BASE),
    **dict.fromkeys(['l', 'large'], dict(
        embed_dims=1024, num_layers=24, num_heads=16,
        feedforward_channels=4096)),
    **dict.fromkeys(['h', 'huge'], dict(
        embed_dims=1280, num_layers=32, num_heads=16,
        feedforward_channels=5120)),
    **dict.fromkeys(['eva-g', 'eva-giant'], dict(
        embed_dims=1408, num_layers=40, num_heads=16,
        feedforward_channels=6144)),
    **dict.fromkeys(['deit-t', 'deit-tiny'], DEIT_TINY),
    **dict.fromkeys(['deit-s', 'deit-small', 'dinov2-s',
                     'dinov2-small'], DEIT_SMALL),
    **dict.fromkeys(['deit-b', 'deit-base'], DEIT_BASE),
    **dict.fromkeys(['dinov2-g', 'dinov2-giant'], dict(
        embed_dims=1536, num_layers=40, num_heads=24,
        feedforward_channels=6144)),
    # 32x32 digits (patch 4: 8x8 patches), head dim 16
    'digits': dict(embed_dims=64, num_layers=6, num_heads=4,
                   feedforward_channels=128),
}
# per-dimension ladders from about half the width (or one head) to the
# full one; DeiT-S: {192..384} x {3..6} x {384..1536}
# (docs/reference/dsnet_pp.md, "DS-ViT"); other named archs: see
# ``default_ladder``
DEFAULT_SUBNETS = {
    **dict.fromkeys(['deit-t', 'deit-tiny'], dict(
        smallest=dict(embed=64, heads=1, mlp=256),
        widest=dict(embed=192, heads=3, mlp=768), num=3)),
    **dict.fromkeys(['deit-s', 'deit-small'], dict(
        smallest=dict(embed=192, heads=3, mlp=384),
        widest=dict(embed=384, heads=6, mlp=1536), num=4)),
    **dict.fromkeys(['deit-b', 'deit-base'], dict(
        smallest=dict(embed=384, heads=6, mlp=768),
        widest=dict(embed=768, heads=12, mlp=3072), num=7)),
    'digits': dict(
        smallest=dict(embed=16, heads=1, mlp=32),
        widest=dict(embed=64, heads=4, mlp=128), num=4),
}


def default_ladder(arch: Mapping) -> dict:
    """The default ladder of a named arch without its own: 4 sub-networks
    in whole steps, from about half the embedding width and heads and a
    quarter of the MLP width to the full ones."""

    def smallest(top: int, fraction: float) -> int:
        return top - 3 * max(1, int(top * (1 - fraction)) // 3)

    return dict(
        smallest=dict(embed=smallest(arch['embed_dims'], 0.5),
                      heads=smallest(arch['num_heads'], 0.5),
                      mlp=smallest(arch['feedforward_channels'], 0.25)),
        widest=dict(embed=arch['embed_dims'], heads=arch['num_heads'],
                    mlp=arch['feedforward_channels']), num=4)



def check_norm_cfg(field: str, norm_cfg) -> float:
    """The epsilon of a LayerNorm config (the one norm DSViT slices)."""
    check_keys(field, norm_cfg, ('type', ), ('eps', ))
    check_choice(f'{field}.type', norm_cfg['type'], ['LN'])
    norm_eps = norm_cfg.get('eps', 1e-5)
    check_float(f'{field}.eps', norm_eps, 0, low_open=True)
    return norm_eps



def check_layer_cfgs(layer_cfgs, num_layers: int, defaults: dict,
                     rates: List[float]) -> List[dict]:
    """The keyword arguments of each of ``num_layers`` blocks from
    ``layer_cfgs`` (one dict for all, or one per block) over ``defaults``,
    with stochastic depth ``rates[i]`` for block ``i``."""
    if isinstance(layer_cfgs, Mapping):
        layer_cfgs = [layer_cfgs] * num_layers
    elif not isinstance(layer_cfgs, Sequence) or \
            len(layer_cfgs) != num_layers:
        raise ValueError(
            'layer_cfgs must be a dict or a list of '
            f'{num_layers} dicts (one per block), got {layer_cfgs!r}')
    out = []
    for i, cfg in enumerate(layer_cfgs):
        field = f'layer_cfgs[{i}]'
        check_type(field, cfg, Mapping, 'a dict')
        fixed = [k for k in ('embed_dims', 'num_heads',
                             'feedforward_channels') if k in cfg]
        if fixed:
            raise ValueError(
                f'{field} sets {fixed}: every DSViT block has the '
                "widths of arch (its width groups' widest); set them in "
                'arch instead')
        check_keys(field, cfg, (), LAYER_KEYS)
        for key, only, why in (
                ('num_fcs', 2, 'the sliced MLP has two linear layers'),
                ('ffn_type', 'origin', 'the sliced MLP is the original '
                 'two-layer MLP (SwiGLU is not sliced)'),
                ('init_cfg', None, "a block is not an mmengine "
                 "BaseModule: give the backbone's init_cfg a layer "
                 "kind instead")):
            if key in cfg and cfg[key] != only:
                raise ValueError(f'{field}.{key}={cfg[key]!r} is not '
                                 f'supported: {why}; allowed: {only!r}')
        kwargs = dict(defaults, drop_path_rate=rates[i])
        kwargs.update((k, v) for k, v in cfg.items()
                      if k not in ('num_fcs', 'ffn_type', 'init_cfg'))
        kwargs['norm_eps'] = check_norm_cfg(
            f'{field}.norm_cfg', kwargs.pop('norm_cfg'))
        for key in ('drop_rate', 'attn_drop_rate', 'drop_path_rate'):
            if key in kwargs:
                check_float(f'{field}.{key}', kwargs[key], 0, 1,
                            high_open=True)
        check_bool(f'{field}.qkv_bias', kwargs['qkv_bias'])
        check_float(f'{field}.layer_scale_init_value',
                    kwargs['layer_scale_init_value'], 0)
        if 'act_cfg' in kwargs:
            check_keys(f'{field}.act_cfg', kwargs['act_cfg'], ('type', ),
                       ('approximate', 'inplace', 'negative_slope'))
        out.append(kwargs)
    return out



def expand_subnets(subnets: SubnetsCfg, groups: List[Tuple[str, ...]],
                   tops: Dict[str, int], fixed_blocks: int) -> SubnetsCfg:
    """``subnets`` with per-dimension entries made full group maps (the
    first ``fixed_blocks`` blocks at their widest, ``tops``)."""

    def full(widths: Mapping, field: str) -> Dict[str, int]:
        keys = set(widths)
        if not keys & set(DIMS):
            return dict(widths)
        if keys != set(DIMS):
            raise ValueError(
                f'{field} as per-dimension widths must set exactly '
                f'{list(DIMS)}, got {sorted(keys)}')
        return {g: tops[dim] if i < fixed_blocks else widths[dim]
                for i, gs in enumerate(groups)
                for dim, g in zip(DIMS, gs)}

    if isinstance(subnets, Mapping):
        ladder = dict(subnets)
        for key in ('smallest', 'widest'):
            if isinstance(ladder.get(key), Mapping):
                ladder[key] = full(ladder[key], f'subnets.{key}')
        return ladder
    return [full(w, f'subnets[{k}]') for k, w in enumerate(subnets)]

def check_fixed(space: SubnetSpace, groups: List[Tuple[str, ...]],
                tops: Dict[str, int], fixed_blocks: int) -> None:
    """Every sub-network runs the first ``fixed_blocks`` blocks at their
    widest (``tops``)."""
    for spec in space.subnets:
        for gs in groups[:fixed_blocks]:
            for dim, g in zip(DIMS, gs):
                if spec[g] != tops[dim]:
                    raise ValueError(
                        f'subnets[{spec.position}].{g}={spec[g]}, but blocks '
                        f'0..{fixed_blocks - 1} are fixed at full '
                        f'width (fixed_blocks={fixed_blocks}): it '
                        f'must be {tops[dim]}')



_LEGACY_MLP_KEYS = (('.ffn.fc1.', '.ffn.layers.0.0.'),
                    ('.ffn.fc2.', '.ffn.layers.1.'))


def convert_checkpoint(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                       prefix: str) -> None:
    """A checkpoint's keys under ``prefix`` made ``model``'s, in place: the
    MLP keys of earlier DSViT checkpoints renamed, the position embedding's
    class-token entry dropped for ``with_cls_token=False`` and the position
    embedding resized to the model's patch grid (as ``VisionTransformer``
    does)."""
    for key in [k for k in state_dict if k.startswith(prefix + 'layers.')]:
        for old, new in _LEGACY_MLP_KEYS:
            if old in key:
                state_dict[key.replace(old, new, 1)] = state_dict.pop(key)
                break
    name = prefix + 'pos_embed'
    pos_embed = state_dict.get(name)
    if not isinstance(pos_embed, torch.Tensor) or pos_embed.dim() != 3 or \
            pos_embed.shape[-1] != model.embed_dims:
        return  # a mismatch for the key check to name
    tokens = model.pos_embed.shape[1]
    if not model.with_cls_token and pos_embed.shape[1] == tokens + 1:
        pos_embed = pos_embed[:, 1:]
    if pos_embed.shape[1] != tokens:
        side = round(math.sqrt(pos_embed.shape[1] - model.num_extra_tokens))
        if side * side + model.num_extra_tokens != pos_embed.shape[1]:
            raise ValueError(
                f'{name} of the checkpoint has {pos_embed.shape[1]} tokens, '
                f'not {model.num_extra_tokens} extra tokens and a square '
                f'patch grid: it cannot be resized to the model\'s '
                f'{tuple(model.patch_resolution)} grid')
        print_log(f'resize {name} from {tuple(state_dict[name].shape)} to '
                  f'{tuple(model.pos_embed.shape)} ({model.interpolate_mode})',
                  logger='current')
        pos_embed = resize_pos_embed(pos_embed, (side, side),
                                     model.patch_resolution,
                                     model.interpolate_mode,
                                     model.num_extra_tokens)
    state_dict[name] = pos_embed
