# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The transformer block of DS-ViT: a pre-norm block with dynamic idle
slicing that runs at a sub-network's widths (``forward``) and builds its own
static form (``build_static``) beside it."""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks.drop import DropPath

from dsnet_mm.ops import (DSMLP, DSLayerNorm, DSMultiheadAttention,
                          rejoin_idle)
from dsnet_mm.static import (LayerBuilder, StaticAttention, StaticMLP,
                             StaticScale, StaticViTBlock)
from ..routing import MaskedRouting, RunSpec
from ..subnet import SubnetSpec

# the sliced dimensions of a block, in the order of its width groups
DIMS = ('embed', 'heads', 'mlp')


def block_groups(index: int) -> Tuple[str, str, str]:
    """The width groups of block ``index``: embedding width, heads, MLP."""
    return tuple(f'blocks.{index}.{dim}' for dim in DIMS)


def route_mask(spec: RunSpec, group: str) -> Optional[torch.Tensor]:
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

    def forward(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        embed, heads, mlp = self.groups
        d, h, m = spec[embed], spec[heads], spec[mlp]
        mask = route_mask(spec, embed)
        a = x[..., :d]
        if h:
            out = self.attn(self.ln1(a, mask), h, route_mask(spec, heads),
                            mask)
            if self.layer_scale:
                out = self.attn.gamma1(out)
            a = a + self.attn.out_drop(out)
        if m:
            out = self.ffn(self.ln2(a, mask), m, route_mask(spec, mlp), mask)
            if self.layer_scale:
                out = self.ffn.gamma2(out)
            a = a + self.ffn.dropout_layer(out)
        return rejoin_idle(a, x)

    def build_static(self, spec: SubnetSpec,
                     layers: LayerBuilder) -> StaticViTBlock:
        """The block at ``spec``'s width, heads and MLP width, built by
        ``layers`` (a branch at width 0 is left out)."""
        embed, heads, mlp = self.groups
        d, h, m = spec[embed], spec[heads], spec[mlp]
        attn, ffn = self.attn, self.ffn

        def scale(name: str, module: nn.Module) -> Optional[StaticScale]:
            return StaticScale(getattr(module, name).weight[:d]) \
                if self.layer_scale else None

        return StaticViTBlock(
            d, layers.layer_norm(self.ln1, d),
            StaticAttention(layers.qkv(attn.qkv, d, h),
                            layers.sliced_linear(attn.proj,
                                                 h * attn.head_dims, d),
                            h, attn.head_dims, scale('gamma1', attn))
            if h else None,
            layers.layer_norm(self.ln2, d),
            StaticMLP(layers.sliced_linear(ffn.fc1, d, m),
                      layers.sliced_linear(ffn.fc2, m, d),
                      copy.deepcopy(ffn.act), scale('gamma2', ffn))
            if m else None)
