# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT: a dynamic slimmable vision transformer with dynamic idle slicing.

DS-Net++'s DS-ViT++ as we read it (``docs/reference/dsnet_pp.md``): the
paper's method sections were not available to us, so the slicing rules and
the reading of "dynamic idle slicing" below are our proposals, with the
listed alternatives selectable.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS

from dsnet_mm.ops import (DSMLP, DSLayerNorm, DSLinear, DSMultiheadAttention,
                          DSQKVLinear, rejoin_idle)
from dsnet_mm.ops.se import TOKEN_POOLS
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints, check_keys)
from dsnet_mm.ops.vit import channel_mask
from ..gates import DSGate
from ..routing import MaskedRouting
from ..subnet import (SubnetSpace, SubnetSpec, SubnetsCfg,
                      check_subnets_cfg)
from .ds_backbone import DSBackboneMixin

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
    Module names follow mmpretrain's ``TransformerEncoderLayer`` except the
    MLP's (``ffn.fc1``/``ffn.fc2`` for its ``ffn.layers.0.0``/
    ``ffn.layers.1``).

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
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 groups: Tuple[str, str, str],
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.groups = groups
        self.ln1 = DSLayerNorm(embed_dims, norm_eps)
        self.attn = DSMultiheadAttention(embed_dims, num_heads, qkv_bias)
        self.ln2 = DSLayerNorm(embed_dims, norm_eps)
        self.ffn = DSMLP(embed_dims, feedforward_channels)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 \
            else nn.Identity()

    def forward(self, x: torch.Tensor, spec: Spec) -> torch.Tensor:
        embed, heads, mlp = self.groups
        d, h, m = spec[embed], spec[heads], spec[mlp]
        mask = _route_mask(spec, embed)
        a = x[..., :d]
        if h:
            a = a + self.drop_path(
                self.attn(self.ln1(a, mask), h, _route_mask(spec, heads),
                          mask))
        if m:
            a = a + self.drop_path(
                self.ffn(self.ln2(a, mask), m, _route_mask(spec, mlp), mask))
        return rejoin_idle(a, x)


@MODELS.register_module()
class DSViT(DSBackboneMixin, BaseBackbone):
    """Dynamic slimmable vision transformer (DS-ViT++ of DS-Net++).

    mmpretrain's ``VisionTransformer`` (class token, learned position
    embedding, pre-norm blocks, final LayerNorm ``ln1``) whose blocks run
    sub-networks by slicing their stored weights: per block, the embedding
    width ``d`` (channels of the residual stream the block reads and
    writes), the number of heads ``h`` at the fixed head dimension
    ``embed_dims / num_heads`` and the MLP hidden width ``m``.

    **Width groups.** Block ``i`` (module ``layers.i``) has three groups,
    ``'blocks.{i}.embed'`` (channels), ``'blocks.{i}.heads'`` (heads) and
    ``'blocks.{i}.mlp'`` (hidden units), so any non-uniform sub-network is a
    spec. The patch embedding, class token, position embedding, final norm
    and classifier have no group: with dynamic idle slicing the stream keeps
    all channels (see :class:`DSTransformerEncoderLayer`).

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

    ``describe_channels`` (the progressive search's channel reordering) is
    not implemented: every block's embedding group indexes one shared
    stream axis, and heads move in blocks of ``head_dims`` rows of q, k and
    v, neither of which is a group of freely permutable channel axes.

    Args:
        arch (str | dict): ``'deit-tiny'``, ``'deit-small'``, ``'deit-base'``
            (or ``'deit-t'``/``'deit-s'``/``'deit-b'``), ``'digits'`` (for
            32x32 images with ``patch_size=4``), or a dict with keys
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``. Defaults to ``'deit-small'``.
        img_size (int | tuple): Input size the position embedding is stored
            for (other sizes interpolate it). Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Image channels. Defaults to 3.
        subnets (dict | list, optional): The sub-network list, see above.
            Defaults to the arch's ladder (DeiT-S: ``embed`` 192-384,
            ``heads`` 3-6, ``mlp`` 384-1536 in 4 steps), or for a
            dict arch the full-width network only.
        fixed_blocks (int): Leading blocks that never slice. Defaults to 0.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned
            (negative counts from the last). Defaults to -1.
        out_type (str): ``'cls_token'`` (``[B, C]``), ``'featmap'`` (patch
            tokens, ``[B, C, H, W]``), ``'avg_featmap'`` (mean patch token,
            normalised by ``ln2``, ``[B, C]``) or ``'raw'`` (``[B, N, C]``).
            Defaults to ``'cls_token'``.
        final_norm (bool): Normalise the last block's output (``ln1``).
            Defaults to True.
        idle_head (bool): Reading (B), see above. Defaults to False.
        idle_branches (bool): Reading (C), see above. Defaults to False.
        gate (dict, optional): ``dict(block=k, window=(start, size))`` and
            optionally ``features`` (``'squeeze'`` or ``'pooled'``),
            ``head_init`` (``'torch'`` or ``'tf'``), see ``DSGate``, and
            ``tokens`` (``'cls_token'`` or ``'mean'``). Defaults to None
            (no gate, e.g. Stage I).
        qkv_bias (bool): Whether q, k and v have a bias. Defaults to True.
        drop_path_rate (float): Stochastic depth, rising linearly to this
            over the blocks. Defaults to 0.
        norm_cfg (dict): ``dict(type='LN', eps=...)``. Defaults to
            ``dict(type='LN', eps=1e-6)``.
        frozen_stages (int): Freeze the patch embedding, class token and
            position embedding (0), and blocks 1..k (k > 0; at k =
            ``num_layers`` also the final norms) in train mode; -1 freezes
            nothing. Defaults to -1.
        interpolate_mode (str): Position embedding interpolation for other
            input sizes. Defaults to ``'bicubic'``.
        init_cfg (dict, optional): Initialization config. Defaults to None
            (DeiT's: truncated normal, std 0.02, for every linear weight,
            zero biases).
    """
    _deit_tiny = dict(embed_dims=192, num_layers=12, num_heads=3,
                      feedforward_channels=768)
    _deit_small = dict(embed_dims=384, num_layers=12, num_heads=6,
                       feedforward_channels=1536)
    _deit_base = dict(embed_dims=768, num_layers=12, num_heads=12,
                      feedforward_channels=3072)
    arch_zoo = {
        **dict.fromkeys(['deit-t', 'deit-tiny'], _deit_tiny),
        **dict.fromkeys(['deit-s', 'deit-small'], _deit_small),
        **dict.fromkeys(['deit-b', 'deit-base'], _deit_base),
        # 32x32 digits (patch 4: 8x8 patches), head dim 16
        'digits': dict(embed_dims=64, num_layers=6, num_heads=4,
                       feedforward_channels=128),
    }
    # per-dimension ladders from about half the width (or one head) to the
    # full one; DeiT-S: {192..384} x {3..6} x {384..1536}
    # (docs/reference/dsnet_pp.md, "DS-ViT")
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
    num_extra_tokens = 1  # the class token
    # per-sample routing masks each op's input and output and the MLP's
    # hidden units after its activation (dsnet_mm.ops.vit); there is no
    # conv-BN-activation to mask before the activation
    mask_positions = ('after_act', )

    def __init__(self,
                 arch: Union[str, dict] = 'deit-small',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 subnets: Optional[SubnetsCfg] = None,
                 fixed_blocks: int = 0,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 final_norm: bool = True,
                 idle_head: bool = False,
                 idle_branches: bool = False,
                 gate: Optional[dict] = None,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if isinstance(arch, str):
            check_choice('arch', arch, sorted(self.arch_zoo))
            if subnets is None:
                subnets = self.default_subnets[arch]
            arch = self.arch_zoo[arch]
        elif not isinstance(arch, dict) or set(arch) != set(ARCH_KEYS):
            raise ValueError(f'arch must be one of {sorted(self.arch_zoo)} '
                             f'or a dict with keys {list(ARCH_KEYS)}, got '
                             f'{arch!r}')
        for key in ARCH_KEYS:
            check_int(f'arch.{key}', arch[key], 1)
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        tops = dict(embed=arch['embed_dims'], heads=arch['num_heads'],
                    mlp=arch['feedforward_channels'])
        if subnets is None:
            subnets = [tops]
        check_subnets_cfg('subnets', subnets)
        check_choice('out_type', out_type, self.OUT_TYPES)
        check_keys('norm_cfg', norm_cfg, ('type', ), ('eps', ))
        check_choice('norm_cfg.type', norm_cfg['type'], ['LN'])
        norm_eps = norm_cfg.get('eps', 1e-6)
        check_float('norm_cfg.eps', norm_eps, 0, low_open=True)
        self.out_indices = self._check_stage_args(
            self.num_layers, out_indices, frozen_stages, in_channels, False)
        check_int('fixed_blocks', fixed_blocks, 0, self.num_layers)
        size = (img_size, img_size) if isinstance(img_size, int) \
            else img_size
        check_ints('img_size', size, 1, length=2)
        check_int(f'patch_size (img_size={img_size})', patch_size, 1,
                  min(size))
        for key, value in (('final_norm', final_norm),
                           ('idle_head', idle_head),
                           ('idle_branches', idle_branches),
                           ('qkv_bias', qkv_bias)):
            check_bool(key, value)
        check_float('drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        check_choice('interpolate_mode', interpolate_mode,
                     INTERPOLATE_MODES)
        self.out_type = out_type
        self.final_norm = final_norm
        self.idle_head = idle_head
        self.idle_branches = idle_branches
        self.fixed_blocks = fixed_blocks
        self.frozen_stages = frozen_stages
        self.interpolate_mode = interpolate_mode
        self.in_channels = in_channels
        self.norm_eval = False  # no batch norm

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

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            input_size=img_size,
            embed_dims=self.embed_dims,
            conv_type='Conv2d',
            kernel_size=patch_size,
            stride=patch_size,
            bias=True)
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_extra_tokens,
                        self.embed_dims))
        rates = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.layers = nn.ModuleList(
            DSTransformerEncoderLayer(
                self.embed_dims, arch['num_heads'],
                arch['feedforward_channels'], groups[i], qkv_bias, rates[i],
                norm_eps) for i in range(self.num_layers))
        if final_norm:
            self.ln1 = DSLayerNorm(self.embed_dims, norm_eps)
        if out_type == 'avg_featmap':
            self.ln2 = DSLayerNorm(self.embed_dims, norm_eps)
        if gate_kwargs is not None:
            tokens = gate_kwargs.pop('tokens', 'cls_token')
            check_choice('gate.tokens', tokens, TOKEN_POOLS)
            self.gate = DSGate(self.embed_dims, tokens=tokens, **gate_kwargs)
        self._hw = self.patch_resolution  # the grid of the last input
        self._freeze_stages()

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
        """Patch tokens with the class token and position embedding; the
        patch grid is kept for ``'featmap'`` outputs (``self._hw``)."""
        tokens, self._hw = self.patch_embed(x)
        cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls_token, tokens], dim=1)
        return tokens + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            self._hw,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)

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
        super().init_weights()
        if isinstance(self.init_cfg, dict) and \
                self.init_cfg.get('type') == 'Pretrained':
            return
        trunc_normal_(self.pos_embed, std=.02)
        if self.init_cfg is None:
            for m in self.modules():
                if isinstance(m, (DSLinear, DSQKVLinear)):
                    trunc_normal_(m.weight, std=.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        modules: List[nn.Module] = [self.patch_embed,
                                    *self.layers[:self.frozen_stages]]
        if self.frozen_stages == self.num_layers:
            modules.extend(getattr(self, n) for n in ('ln1', 'ln2')
                           if hasattr(self, n))
        params = [self.cls_token, self.pos_embed]
        for m in modules:
            m.eval()
            params.extend(m.parameters())
        for p in params:
            p.requires_grad = False
