# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT: a dynamic slimmable vision transformer with dynamic idle slicing.

DS-Net++'s DS-ViT++ as we read it (``docs/reference/dsnet_pp.md``): the
paper's method sections were not available to us, so the slicing rules and
the reading of "dynamic idle slicing" below are our proposals, with the
listed alternatives selectable.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch.utils.checkpoint import checkpoint

from dsnet_mm.ops import (DSMLP, DSLayerNorm, DSLinear, DSMultiheadAttention,
                          DSQKVLinear, rejoin_idle)
from dsnet_mm.ops.se import TOKEN_POOLS
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints, check_keys,
                                check_type)
from dsnet_mm.ops.vit import channel_mask
from ..gates import DSGate
from ..routing import MaskedRouting
from ..subnet import (SubnetSpace, SubnetSpec, SubnetsCfg,
                      check_subnets_cfg)
from .ds_backbone import DSBackboneMixin
from .pretrained import register_whole_loading, with_ds_layer_kinds

# the sliced dimensions of a block, in the order of its width groups
DIMS = ('embed', 'heads', 'mlp')
ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')
# the position embedding's interpolation modes (``F.interpolate`` on 2-D)
INTERPOLATE_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic',
                     'area')
Spec = Union[SubnetSpec, MaskedRouting]


def block_groups(index: int) -> Tuple[str, str, str]:
    """The width groups of block ``index``: embedding width, heads, MLP."""
    return tuple(f'blocks.{index}.{dim}' for dim in DIMS)


def _route_mask(spec: Spec, group: str) -> Optional[torch.Tensor]:
    """The per-sample ``[B, width]`` mask of a routing, None for a spec."""
    if isinstance(spec, MaskedRouting):
        return spec.channel_mask(group)
    return None


class DSLayerScale(nn.Module):
    """mmpretrain's ``LayerScale`` (``x * weight``) on the first ``d``
    channels: ``weight[:d]``.

    Args:
        dim (int): Widest number of channels.
        init_value (float): The initial scale.
    """

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim) * init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:x.shape[-1]]


class DSTransformerEncoderLayer(nn.Module):
    """A pre-norm transformer block with dynamic idle slicing.

    The residual stream keeps all ``embed_dims`` channels. At embedding
    width ``d``, ``h`` heads and MLP hidden width ``m`` (the block's three
    width groups), the block reads and writes only the first ``d`` channels;
    the others are idle and pass through bit-identical (reading (A) of
    ``docs/reference/dsnet_pp.md``, "Dynamic idle slicing")::

        a = x[..., :d]
        a = a + Attn_{d,h}(LN_d(a))      # LN statistics over the d channels
        a = a + MLP_{d,m}(LN_d(a))
        x = cat([a, x[..., d:]])

    A branch at width 0 (``h = 0`` or ``m = 0``, allowed with
    ``idle_branches``) is an identity. Under a
    :class:`~dsnet_mm.models.routing.MaskedRouting` the block runs at the
    routing's widest widths with per-sample masks (see
    :mod:`dsnet_mm.ops.vit`), which zero each branch's output beyond each
    sample's ``d``, so those channels pass through unchanged as well.
    Module and parameter names are those of mmpretrain's
    ``TransformerEncoderLayer`` (``ln1``, ``attn.qkv``, ``attn.proj``,
    ``attn.gamma1``, ``ln2``, ``ffn.layers.0.0``, ``ffn.layers.1``,
    ``ffn.gamma2``).

    Args:
        embed_dims (int): Widest embedding width.
        num_heads (int): Stored number of heads.
        feedforward_channels (int): Widest MLP hidden width.
        groups (Tuple[str, str, str]): The block's width groups (embedding
            width, heads, MLP hidden width).
        qkv_bias (bool): Whether q, k and v have a bias. Defaults to True.
        drop_path_rate (float): Stochastic depth of both branches.
            Defaults to 0.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        drop_rate (float): Dropout after the attention's output projection,
            after the MLP's activation and after its output. Defaults to 0.
        attn_drop_rate (float): Dropout of the attention weights.
            Defaults to 0.
        layer_scale_init_value (float): Initial value of the per-channel
            scales of both branches (mmpretrain's ``gamma1``/``gamma2``,
            sliced to ``d``); 0 for none. Defaults to 0.
        act_cfg (dict): The MLP's element-wise activation. Defaults to
            ``dict(type='GELU')``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 groups: Tuple[str, str, str],
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 layer_scale_init_value: float = 0.,
                 act_cfg: dict = dict(type='GELU')) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.groups = groups
        self.ln1 = DSLayerNorm(embed_dims, norm_eps)
        self.attn = DSMultiheadAttention(embed_dims, num_heads, qkv_bias,
                                         attn_drop_rate, drop_rate)
        self.ln2 = DSLayerNorm(embed_dims, norm_eps)
        self.ffn = DSMLP(embed_dims, feedforward_channels,
                         build_activation_layer(act_cfg), drop_rate)
        if layer_scale_init_value > 0:
            self.attn.gamma1 = DSLayerScale(embed_dims,
                                            layer_scale_init_value)
            self.ffn.gamma2 = DSLayerScale(embed_dims,
                                           layer_scale_init_value)
        # stochastic depth where mmpretrain keeps it (no parameters)
        self.attn.out_drop = DropPath(drop_path_rate)
        self.ffn.dropout_layer = DropPath(drop_path_rate)

    @property
    def layer_scale(self) -> bool:
        return hasattr(self.attn, 'gamma1')

    def forward(self, x: torch.Tensor, spec: Spec) -> torch.Tensor:
        embed, heads, mlp = self.groups
        d, h, m = spec[embed], spec[heads], spec[mlp]
        mask = _route_mask(spec, embed)
        a = x[..., :d]
        if h:
            out = self.attn(self.ln1(a, mask), h, _route_mask(spec, heads),
                            mask)
            if self.layer_scale:
                out = self.attn.gamma1(out)
            a = a + self.attn.out_drop(out)
        if m:
            out = self.ffn(self.ln2(a, mask), m, _route_mask(spec, mlp), mask)
            if self.layer_scale:
                out = self.ffn.gamma2(out)
            a = a + self.ffn.dropout_layer(out)
        return rejoin_idle(a, x)


@MODELS.register_module()
class DSViT(DSBackboneMixin, BaseBackbone):
    """Dynamic slimmable vision transformer (DS-ViT++ of DS-Net++).

    mmpretrain's ``VisionTransformer`` (class token, learned position
    embedding, pre-norm blocks, final LayerNorm ``ln1``) whose blocks run
    sub-networks by slicing their stored weights: per block, the embedding
    width ``d`` (channels of the residual stream the block reads and
    writes), the number of heads ``h`` at the fixed head dimension
    ``embed_dims / num_heads`` and the MLP hidden width ``m``. Every
    argument of ``VisionTransformer`` is accepted with its meaning and
    default, and the parameter names are its own, so a config swaps the
    backbone's ``type`` and a ``VisionTransformer`` checkpoint loads as it
    is (see **Loading**). At full width the network computes what
    ``VisionTransformer`` computes.

    **Width groups.** Block ``i`` (module ``layers.i``) has three groups,
    ``'blocks.{i}.embed'`` (channels), ``'blocks.{i}.heads'`` (heads) and
    ``'blocks.{i}.mlp'`` (hidden units), so any non-uniform sub-network is a
    spec. The patch embedding, class token, position embedding, pre-norm,
    final norm and classifier have no group: with dynamic idle slicing the
    stream keeps all channels (see :class:`DSTransformerEncoderLayer`).

    **Idle slicing readings** (our readings, ``docs/reference/dsnet_pp.md``).
    The default is reading (A): idle channels pass through a block unchanged
    and reach the final norm and the head. ``idle_head=True`` selects
    reading (B): an output of block ``i`` keeps only its first
    ``blocks.{i}.embed`` channels, so the idle channels also skip the final
    norm (whose statistics cover the active channels only) and the head
    (which must read a prefix of its input, e.g. ``DSLinearClsHead``).
    ``idle_branches=True`` adds reading (C): the heads and MLP groups may be
    0, which makes that branch an identity (depth as a special case of
    width).

    **Sub-networks.** ``subnets`` is a list or a uniform ladder as for
    :class:`~dsnet_mm.models.subnet.SubnetSpace`, whose entries are either
    full group maps or per-dimension widths ``dict(embed=..., heads=...,
    mlp=...)`` applied to every block from ``fixed_blocks`` on; the first
    ``fixed_blocks`` blocks always run at full width (e.g. the blocks before
    a gate).

    **Gate.** ``gate=dict(block=k, window=(start, size))`` puts DS-Net's
    double-headed gate (:class:`~dsnet_mm.models.gates.DSGate` on tokens)
    after block ``k``: it reads the class token (``tokens='cls_token'``) or
    the mean patch token (``tokens='mean'``) of the first
    ``blocks.{k}.embed`` channels, its attention head scales those channels
    of every token (in Stage I too, as an SE), and its slimming head picks
    one sub-network of the window per image for blocks ``k+1`` on. The
    window's sub-networks must share every group of blocks ``0..k``
    (our reading, ``docs/reference/dsnet_pp.md``: the CNN gate moved onto
    the token sequence).

    **Loading.** Every state-dict load (``init_cfg=dict(type='Pretrained',
    ...)``, mmengine's ``load_from``, ``load_state_dict``) is whole or fails
    (:func:`~dsnet_mm.models.backbones.pretrained.register_whole_loading`):
    the checkpoint's position embedding is resized to this ``img_size`` as
    ``VisionTransformer`` resizes it (and its class token's entry dropped
    for ``with_cls_token=False``), the MLP keys of earlier DSViT checkpoints
    (``ffn.fc1``/``ffn.fc2``) are renamed, and then any key of the model
    the checkpoint lacks, any key of the checkpoint the model lacks and any
    shape that differs is a ValueError naming them, except keys under
    ``unmatched_keys`` (e.g. ``['gate.']`` for a gate that a static
    ``VisionTransformer`` checkpoint does not hold). A load that holds no
    key of the backbone at all (e.g. of an EMA copy the checkpoint lacks)
    is left to the caller.

    ``describe_channels`` (the progressive search's channel reordering) is
    not implemented: every block's embedding group indexes one shared
    stream axis, and heads move in blocks of ``head_dims`` rows of q, k and
    v, neither of which is a group of freely permutable channel axes.

    Args:
        arch (str | dict): One of mmpretrain's ``VisionTransformer`` archs
            (``'s'``/``'small'``, ``'b'``/``'base'``, ``'l'``/``'large'``,
            ``'h'``/``'huge'``, ``'eva-g'``/``'eva-giant'``, ``'deit-t'``/
            ``'deit-tiny'``, ``'deit-s'``/``'deit-small'``, ``'deit-b'``/
            ``'deit-base'``, ``'dinov2-s'``/``'dinov2-small'``,
            ``'dinov2-g'``/``'dinov2-giant'``; any case), ``'digits'`` (for
            32x32 images with ``patch_size=4``), or a dict with keys
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``. Defaults to ``'base'``.
        img_size (int | tuple): Input size the position embedding is stored
            for (other sizes interpolate it). Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned
            (negative counts from the last), any sequence (list, tuple,
            range). Defaults to -1.
        drop_rate (float): Dropout after the position embedding, after each
            attention's output projection and in each MLP (after the
            activation and after the output). Defaults to 0.
        drop_path_rate (float): Stochastic depth, rising linearly to this
            over the blocks. Defaults to 0.
        qkv_bias (bool): Whether q, k and v have a bias. Defaults to True.
        norm_cfg (dict): ``dict(type='LN', eps=...)``. Defaults to
            ``dict(type='LN', eps=1e-6)``.
        final_norm (bool): Normalise the last block's output (``ln1``).
            Defaults to True.
        out_type (str): ``'cls_token'`` (``[B, C]``), ``'featmap'`` (patch
            tokens, ``[B, C, H, W]``), ``'avg_featmap'`` (mean patch token,
            normalised by ``ln2``, ``[B, C]``) or ``'raw'`` (``[B, N, C]``).
            Defaults to ``'cls_token'``.
        with_cls_token (bool): Prepend the class token. False needs an
            ``out_type`` other than ``'cls_token'`` and a gate on
            ``tokens='mean'``. Defaults to True.
        frozen_stages (int): As ``VisionTransformer``'s: k > 0 freezes (no
            gradient, eval mode in training) the patch embedding, class
            token, position embedding, pre-norm and blocks 1..k (at k =
            ``num_layers`` also the final norms); 0 and -1 freeze nothing.
            Defaults to -1.
        interpolate_mode (str): Position embedding interpolation for other
            input sizes and for checkpoints of another size. Defaults to
            ``'bicubic'``.
        layer_scale_init_value (float): Initial per-channel scale of every
            branch (sliced with the embedding width); 0 for none. Defaults
            to 0.
        patch_cfg (dict): Overrides of the patch embedding's arguments
            (mmcv's ``PatchEmbed``; it is never sliced). Defaults to ``{}``.
        layer_cfgs (dict | Sequence[dict]): Overrides of each block's
            arguments, one dict for all or one per block: ``drop_rate``,
            ``attn_drop_rate``, ``drop_path_rate``, ``qkv_bias``,
            ``layer_scale_init_value``, ``act_cfg`` (an element-wise
            activation), ``norm_cfg`` (LN) and, at their only supported
            values, ``num_fcs=2``, ``ffn_type='origin'``,
            ``init_cfg=None``. Defaults to ``{}``.
        pre_norm (bool): A LayerNorm over all channels after the position
            embedding (and no patch embedding bias), as CLIP's. Defaults to
            False.
        init_cfg (dict | list, optional): mmengine initialisation configs,
            applied after DSViT's own initialisation (DeiT's: truncated
            normal, std 0.02, for every linear weight, zero biases, and the
            position embedding); a ``layer`` naming ``'Linear'``,
            ``'Conv2d'`` or ``'LayerNorm'`` reaches the DS layers of that
            kind too. ``type='Pretrained'`` (``checkpoint``, ``prefix``,
            ``map_location`` and ``unmatched_keys``, further prefixes that
            may stay unmatched in this load) loads weights-only and whole
            (see **Loading**). Defaults to None.
        subnets (dict | list, optional): The sub-network list, see above.
            Defaults to the arch's ladder (DeiT-S: ``embed`` 192-384,
            ``heads`` 3-6, ``mlp`` 384-1536 in 4 steps; other named archs:
            about half the embedding width and heads and a quarter of the
            MLP width to the full ones in 4 whole steps), or for a dict
            arch the
            full-width network only.
        fixed_blocks (int): Leading blocks that never slice. Defaults to 0.
        idle_head (bool): Reading (B), see above. Defaults to False.
        idle_branches (bool): Reading (C), see above. Defaults to False.
        gate (dict, optional): ``dict(block=k, window=(start, size))`` and
            optionally ``features`` (``'squeeze'`` or ``'pooled'``),
            ``head_init`` (``'torch'`` or ``'tf'``), see ``DSGate``, and
            ``tokens`` (``'cls_token'`` or ``'mean'``). Defaults to None
            (no gate, e.g. Stage I).
        with_cp (bool): Recompute each block in the backward pass instead of
            storing its activations (activation checkpointing). Defaults to
            False.
        unmatched_keys (Sequence[str]): Key prefixes (relative to the
            backbone) that a loaded checkpoint may lack or hold beyond the
            model's, see **Loading**. Defaults to ().
    """
    _deit_tiny = dict(embed_dims=192, num_layers=12, num_heads=3,
                      feedforward_channels=768)
    _deit_small = dict(embed_dims=384, num_layers=12, num_heads=6,
                       feedforward_channels=1536)
    _deit_base = dict(embed_dims=768, num_layers=12, num_heads=12,
                      feedforward_channels=3072)
    # the architectures of mmpretrain 1.2.0's VisionTransformer, by name
    arch_zoo = {
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=768, num_layers=8, num_heads=8,
            feedforward_channels=2304)),
        **dict.fromkeys(['b', 'base'], _deit_base),
        **dict.fromkeys(['l', 'large'], dict(
            embed_dims=1024, num_layers=24, num_heads=16,
            feedforward_channels=4096)),
        **dict.fromkeys(['h', 'huge'], dict(
            embed_dims=1280, num_layers=32, num_heads=16,
            feedforward_channels=5120)),
        **dict.fromkeys(['eva-g', 'eva-giant'], dict(
            embed_dims=1408, num_layers=40, num_heads=16,
            feedforward_channels=6144)),
        **dict.fromkeys(['deit-t', 'deit-tiny'], _deit_tiny),
        **dict.fromkeys(['deit-s', 'deit-small', 'dinov2-s',
                         'dinov2-small'], _deit_small),
        **dict.fromkeys(['deit-b', 'deit-base'], _deit_base),
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
    # ``_default_ladder``
    default_subnets = {
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
    OUT_TYPES = ('cls_token', 'featmap', 'avg_featmap', 'raw')
    # the keys a ``layer_cfgs`` entry may set, and those allowed at one value
    LAYER_KEYS = ('drop_rate', 'attn_drop_rate', 'drop_path_rate',
                  'qkv_bias', 'layer_scale_init_value', 'act_cfg',
                  'norm_cfg', 'num_fcs', 'ffn_type', 'init_cfg')
    num_extra_tokens = 1  # the class token (0 with with_cls_token=False)
    # per-sample routing masks each op's input and output and the MLP's
    # hidden units after its activation (dsnet_mm.ops.vit); there is no
    # conv-BN-activation to mask before the activation
    mask_positions = ('after_act', )

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 final_norm: bool = True,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 layer_scale_init_value: float = 0.,
                 patch_cfg: dict = dict(),
                 layer_cfgs: Union[dict, Sequence[dict]] = dict(),
                 pre_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 subnets: Optional[SubnetsCfg] = None,
                 fixed_blocks: int = 0,
                 idle_head: bool = False,
                 idle_branches: bool = False,
                 gate: Optional[dict] = None,
                 with_cp: bool = False,
                 unmatched_keys: Sequence[str] = ()) -> None:
        super().__init__(init_cfg)
        if isinstance(arch, str):
            names = sorted(self.arch_zoo)
            check_choice('arch', arch.lower(), names)
            arch = arch.lower()
            if subnets is None:
                subnets = self.default_subnets.get(arch) or \
                    self._default_ladder(self.arch_zoo[arch])
            arch = self.arch_zoo[arch]
        elif not isinstance(arch, Mapping) or set(arch) != set(ARCH_KEYS):
            raise ValueError(f'arch must be one of {sorted(self.arch_zoo)} '
                             f'or a dict with keys {list(ARCH_KEYS)}, got '
                             f'{arch!r}')
        for key in ARCH_KEYS:
            check_int(f'arch.{key}', arch[key], 1)
        self.arch_settings = dict(arch)
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        tops = dict(embed=arch['embed_dims'], heads=arch['num_heads'],
                    mlp=arch['feedforward_channels'])
        if subnets is None:
            subnets = [tops]
        check_subnets_cfg('subnets', subnets)
        check_choice('out_type', out_type, self.OUT_TYPES)
        norm_eps = self._check_norm_cfg('norm_cfg', norm_cfg)
        if isinstance(out_indices, range):
            out_indices = list(out_indices)
        self.out_indices = self._check_stage_args(
            self.num_layers, out_indices, -1, in_channels, False)
        check_int('frozen_stages', frozen_stages, -1, self.num_layers)
        check_int('fixed_blocks', fixed_blocks, 0, self.num_layers)
        size = (img_size, img_size) if isinstance(img_size, int) \
            else img_size
        check_ints('img_size', size, 1, length=2)
        check_int(f'patch_size (img_size={img_size})', patch_size, 1,
                  min(size))
        for key, value in (('final_norm', final_norm),
                           ('idle_head', idle_head),
                           ('idle_branches', idle_branches),
                           ('qkv_bias', qkv_bias),
                           ('with_cls_token', with_cls_token),
                           ('pre_norm', pre_norm), ('with_cp', with_cp)):
            check_bool(key, value)
        check_float('drop_rate', drop_rate, 0, 1, high_open=True)
        check_float('drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        check_float('layer_scale_init_value', layer_scale_init_value, 0)
        check_choice('interpolate_mode', interpolate_mode,
                     INTERPOLATE_MODES)
        check_type('patch_cfg', patch_cfg, Mapping, 'a dict')
        if not with_cls_token and out_type == 'cls_token':
            raise ValueError(
                "with_cls_token=False has no class token to output: set "
                "out_type to 'featmap', 'avg_featmap' or 'raw'")
        self.out_type = out_type
        self.final_norm = final_norm
        self.idle_head = idle_head
        self.idle_branches = idle_branches
        self.fixed_blocks = fixed_blocks
        self.frozen_stages = frozen_stages
        self.interpolate_mode = interpolate_mode
        self.in_channels = in_channels
        self.with_cls_token = with_cls_token
        self.with_pre_norm = pre_norm
        self.with_cp = with_cp
        self.img_size = size
        self.norm_eval = False  # no batch norm
        if not with_cls_token:
            self.num_extra_tokens = 0

        groups = [block_groups(i) for i in range(self.num_layers)]
        max_widths = {g: tops[dim] for gs in groups
                      for dim, g in zip(DIMS, gs)}
        skippable = [g for gs in groups for g in gs[1:]] \
            if idle_branches else []
        self.space = SubnetSpace(
            max_widths, self._expand(subnets, groups, tops),
            skippable=skippable)
        self._check_fixed(groups, tops)
        self._active = self.space.largest
        # the gate sits after block k < num_layers - 1 (``gate_stage``: k)
        self.gate_stage, self.window, gate_kwargs = self._check_gate(
            gate, range(self.num_layers - 1),
            [[g for gs in groups[:k + 1] for g in gs]
             for k in range(self.num_layers - 1)],
            key='block', extra=('tokens', ))

        self.patch_embed = PatchEmbed(**dict(
            dict(in_channels=in_channels, input_size=img_size,
                 embed_dims=self.embed_dims, conv_type='Conv2d',
                 kernel_size=patch_size, stride=patch_size,
                 bias=not pre_norm), **patch_cfg))
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) \
            if with_cls_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_extra_tokens,
                        self.embed_dims))
        self.drop_after_pos = nn.Dropout(p=drop_rate)
        # np.linspace's values (as VisionTransformer's), without a tensor
        step = drop_path_rate / max(1, self.num_layers - 1)
        rates = [i * step for i in range(self.num_layers)]
        layer_kwargs = self._check_layer_cfgs(
            layer_cfgs, dict(drop_rate=drop_rate, qkv_bias=qkv_bias,
                             layer_scale_init_value=layer_scale_init_value,
                             norm_cfg=norm_cfg), rates)
        self.layers = nn.ModuleList(
            DSTransformerEncoderLayer(
                self.embed_dims, arch['num_heads'],
                arch['feedforward_channels'], groups[i], **layer_kwargs[i])
            for i in range(self.num_layers))
        self.pre_norm = DSLayerNorm(self.embed_dims, norm_eps) \
            if pre_norm else nn.Identity()
        if final_norm:
            self.ln1 = DSLayerNorm(self.embed_dims, norm_eps)
        if out_type == 'avg_featmap':
            self.ln2 = DSLayerNorm(self.embed_dims, norm_eps)
        if gate_kwargs is not None:
            tokens = gate_kwargs.pop('tokens', 'cls_token')
            check_choice('gate.tokens', tokens, TOKEN_POOLS)
            if tokens == 'cls_token' and not with_cls_token:
                raise ValueError(
                    "gate.tokens='cls_token' reads the class token, but "
                    "with_cls_token=False: set gate.tokens='mean'")
            self.gate = DSGate(self.embed_dims, tokens=tokens, **gate_kwargs)
        self._hw = self.patch_resolution  # the grid of the last input
        register_whole_loading(self, _convert_checkpoint, unmatched_keys)
        self._freeze_stages()

    @staticmethod
    def _default_ladder(arch: Mapping) -> dict:
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

    @staticmethod
    def _check_norm_cfg(field: str, norm_cfg) -> float:
        """The epsilon of a LayerNorm config (the one norm DSViT slices)."""
        check_keys(field, norm_cfg, ('type', ), ('eps', ))
        check_choice(f'{field}.type', norm_cfg['type'], ['LN'])
        norm_eps = norm_cfg.get('eps', 1e-5)
        check_float(f'{field}.eps', norm_eps, 0, low_open=True)
        return norm_eps

    def _check_layer_cfgs(self, layer_cfgs, defaults: dict,
                          rates: List[float]) -> List[dict]:
        """The keyword arguments of each block from ``layer_cfgs``."""
        if isinstance(layer_cfgs, Mapping):
            layer_cfgs = [layer_cfgs] * self.num_layers
        elif not isinstance(layer_cfgs, Sequence) or \
                len(layer_cfgs) != self.num_layers:
            raise ValueError(
                'layer_cfgs must be a dict or a list of '
                f'{self.num_layers} dicts (one per block), got {layer_cfgs!r}')
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
            check_keys(field, cfg, (), self.LAYER_KEYS)
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
            kwargs['norm_eps'] = self._check_norm_cfg(
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

    # --- the sub-network list -------------------------------------------
    def _expand(self, subnets: SubnetsCfg, groups: List[Tuple[str, ...]],
                tops: Dict[str, int]) -> SubnetsCfg:
        """``subnets`` with per-dimension entries made full group maps."""

        def full(widths: Mapping, field: str) -> Dict[str, int]:
            keys = set(widths)
            if not keys & set(DIMS):
                return dict(widths)
            if keys != set(DIMS):
                raise ValueError(
                    f'{field} as per-dimension widths must set exactly '
                    f'{list(DIMS)}, got {sorted(keys)}')
            return {g: tops[dim] if i < self.fixed_blocks else widths[dim]
                    for i, gs in enumerate(groups)
                    for dim, g in zip(DIMS, gs)}

        if isinstance(subnets, Mapping):
            ladder = dict(subnets)
            for key in ('smallest', 'widest'):
                if isinstance(ladder.get(key), Mapping):
                    ladder[key] = full(ladder[key], f'subnets.{key}')
            return ladder
        return [full(w, f'subnets[{k}]') for k, w in enumerate(subnets)]

    def _check_fixed(self, groups: List[Tuple[str, ...]],
                     tops: Dict[str, int]) -> None:
        for spec in self.space.subnets:
            for gs in groups[:self.fixed_blocks]:
                for dim, g in zip(DIMS, gs):
                    if spec[g] != tops[dim]:
                        raise ValueError(
                            f'subnets[{spec.index}].{g}={spec[g]}, but blocks '
                            f'0..{self.fixed_blocks - 1} are fixed at full '
                            f'width (fixed_blocks={self.fixed_blocks}): it '
                            f'must be {tops[dim]}')

    # --- forward ---------------------------------------------------------
    def forward_spec(self, x: torch.Tensor,
                     spec: Spec) -> Tuple[torch.Tensor, ...]:
        """Run every block at ``spec``: a sub-network, or a
        :class:`~dsnet_mm.models.routing.MaskedRouting` (every width at the
        routing's widest, channels, heads and hidden units masked per
        sample)."""
        self._check_input(x)
        return tuple(self._run_blocks(self._embed(x), spec,
                                      range(self.num_layers))[1])

    def forward_pre_gate(
        self, x: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Run blocks ``0..k`` (shared by the window) and the gate: (tokens
        after the gate's attention, slimming logits ``[B, len(window)]``,
        outputs of those blocks in ``out_indices``)."""
        if self.gate_stage is None:
            raise RuntimeError('this backbone has no gate: set gate=dict('
                               'block=..., window=(start, size))')
        self._check_input(x)
        x, outs, logits = self._run_blocks(
            self._embed(x), self.window[0], range(self.gate_stage + 1),
            gate_logits=True)
        return x, logits, outs

    def forward_post_gate(self, x: torch.Tensor,
                          spec: Spec) -> List[torch.Tensor]:
        """Run blocks ``k+1`` on at ``spec`` (a sub-network or a routing)."""
        return self._run_blocks(
            x, spec, range(self.gate_stage + 1, self.num_layers))[1]

    def gate_input_width(self, h: torch.Tensor) -> int:
        return self.window[0][block_groups(self.gate_stage)[0]]

    def _plain_supported(self) -> bool:
        """DS-ViT keeps its sliced blocks in cached inference: its static
        network takes the stored image size only (this backbone resizes the
        position embedding), and normalises the class token in its head."""
        return False

    def _run_blocks(self, x: torch.Tensor, spec: Spec, indices: range,
                    gate_logits: bool = False
                    ) -> Tuple[torch.Tensor, List[torch.Tensor],
                               Optional[torch.Tensor]]:
        """Run blocks ``indices`` and the gate after its block: (tokens,
        outputs in ``out_indices``, slimming logits if ``gate_logits``,
        else None: the gate then runs as a plain SE)."""
        outs, logits = [], None
        for i in indices:
            if self.with_cp and self.training and torch.is_grad_enabled():
                x = checkpoint(self.layers[i], x, spec, use_reentrant=False)
            else:
                x = self.layers[i](x, spec)
            if i == self.gate_stage:
                d = spec[block_groups(i)[0]]
                if gate_logits:
                    a, logits = self.gate.forward_gate(x[..., :d])
                else:
                    a = self.gate(x[..., :d])
                x = rejoin_idle(a, x)
            if i in self.out_indices:
                outs.append(self._format_output(x, spec, i))
        return x, outs, logits

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token and position embedding, the
        dropout and the pre-norm; the patch grid is kept for ``'featmap'``
        outputs (``self._hw``)."""
        tokens, self._hw = self.patch_embed(x)
        if self.cls_token is not None:
            cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls_token, tokens], dim=1)
        tokens = tokens + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            self._hw,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(tokens))

    def _format_output(self, x: torch.Tensor, spec: Spec,
                       index: int) -> torch.Tensor:
        mask = None
        if self.idle_head:
            group = block_groups(index)[0]
            x, mask = x[..., :spec[group]], _route_mask(spec, group)
        if self.final_norm and index == self.num_layers - 1:
            x = self.ln1(x, mask)
        elif mask is not None:
            x = x * channel_mask(mask, x).to(x.dtype)
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            return patches.reshape(x.shape[0], *self._hw,
                                   -1).permute(0, 3, 1, 2)
        return self.ln2(patches.mean(dim=1), mask)

    # --- mmpretrain conventions ----------------------------------------
    def init_weights(self) -> None:
        """DeiT's initialisation (truncated normal, std 0.02, for every
        linear weight of the blocks, zero biases; the position embedding
        likewise), then the ``init_cfg`` entries over it (their layer kinds
        reaching the DS layers, see
        :func:`~dsnet_mm.models.backbones.pretrained.with_ds_layer_kinds`),
        then a ``Pretrained`` checkpoint, loaded whole."""
        if not self.is_init:
            trunc_normal_(self.pos_embed, std=.02)
            for m in self.modules():
                if isinstance(m, (DSLinear, DSQKVLinear)):
                    trunc_normal_(m.weight, std=.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        init_cfg = self.init_cfg
        self.init_cfg = with_ds_layer_kinds(init_cfg)
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg

    def _freeze_stages(self) -> None:
        if self.frozen_stages <= 0:
            return
        modules: List[nn.Module] = [self.patch_embed, self.drop_after_pos,
                                    self.pre_norm,
                                    *self.layers[:self.frozen_stages]]
        if self.frozen_stages == self.num_layers:
            modules.extend(getattr(self, n) for n in ('ln1', 'ln2')
                           if hasattr(self, n))
        params = [p for p in (self.cls_token, self.pos_embed)
                  if p is not None]
        for m in modules:
            m.eval()
            params.extend(m.parameters())
        for p in params:
            p.requires_grad = False

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """The layer-wise depth of a parameter, for layer-wise learning-rate
        decay (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``),
        as ``VisionTransformer``'s: the embeddings at 0, block ``i`` at
        ``i + 1``, anything else (final norms, the head) at
        ``num_layers + 1``, of ``num_layers + 2`` depths. The gate after
        block ``k`` is at block ``k``'s depth.

        Args:
            param_name (str): The parameter's name.
            prefix (str): The backbone's prefix in ``param_name``.
                Defaults to ''.

        Returns:
            Tuple[int, int]: The depth and the number of depths.
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or \
                name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1, num_layers
        if name.startswith('gate.') and self.gate_stage is not None:
            return self.gate_stage + 1, num_layers
        return num_layers - 1, num_layers


_LEGACY_MLP_KEYS = (('.ffn.fc1.', '.ffn.layers.0.0.'),
                    ('.ffn.fc2.', '.ffn.layers.1.'))


def _convert_checkpoint(model: DSViT, state_dict: Dict[str, torch.Tensor],
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
