# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of DS-ViT as a plain torch network.

Each block is built at the sub-network's embedding width, heads and MLP
width with the sliced weights copied in (``nn.LayerNorm``, ``nn.Linear``,
``F.scaled_dot_product_attention``), dynamic idle slicing written out (the
block reads and writes the first ``d`` channels of the stream, the rest pass
through); its exported ``.pt2`` and ONNX files (for the stored image size)
need neither dsnet_mm nor mmpretrain to run. The walk is shared with the
gather-indexing baseline of the benchmark, through the layer builder's
``layer_norm``, ``qkv``, ``sliced_linear``, ``conv`` and ``linear``.
"""
import copy
from typing import Optional

import torch
import torch.nn as nn

from dsnet_mm.models.backbones.ds_vit import block_groups
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import AttentionCore, rejoin_idle
from .static_layers import StaticNet, build_se


class StaticAttention(nn.Module):
    """Self-attention of ``heads`` heads: one qkv matmul (rows q, k, v, each
    ``heads * head_dims``), attention, the output projection."""

    def __init__(self, qkv: nn.Module, proj: nn.Module, heads: int,
                 head_dims: int) -> None:
        super().__init__()
        self.qkv = qkv
        self.proj = proj
        self.heads = heads
        self.head_dims = head_dims
        self.core = AttentionCore()  # plain torch (where MAdds are counted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads,
                                      self.head_dims).permute(2, 0, 3, 1,
                                                              4).unbind(0)
        context = self.core(q, k, v)
        return self.proj(context.transpose(1, 2).reshape(b, n, -1))


class StaticMLP(nn.Module):
    """``fc2(act(fc1(x)))``; ``act`` defaults to GELU."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module,
                 act: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.fc1 = fc1
        self.act = nn.GELU() if act is None else act
        self.fc2 = fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class StaticViTBlock(nn.Module):
    """A pre-norm block on the first ``width`` channels of the stream; a
    branch at width 0 is absent (an identity)."""

    def __init__(self, width: int, ln1: nn.Module,
                 attn: Optional[nn.Module], ln2: nn.Module,
                 mlp: Optional[nn.Module]) -> None:
        super().__init__()
        self.width = width
        self.ln1, self.attn, self.ln2, self.mlp = ln1, attn, ln2, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[..., :self.width]
        if self.attn is not None:
            a = a + self.attn(self.ln1(a))
        if self.mlp is not None:
            a = a + self.mlp(self.ln2(a))
        return rejoin_idle(a, x)


class StaticViTEmbed(nn.Module):
    """Patch embedding, class token and position embedding, for the stored
    image size, then the full-width ``pre_norm`` if given."""

    def __init__(self, patch_embed: nn.Module, cls_token: torch.Tensor,
                 pos_embed: torch.Tensor,
                 pre_norm: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.cls_token = nn.Parameter(cls_token.detach().clone())
        self.pos_embed = nn.Parameter(pos_embed.detach().clone())
        self.pre_norm = nn.Identity() if pre_norm is None else pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f'the static ViT is built for {self.pos_embed.shape[1] - 1} '
                f'patches, got {tokens.shape[1]} (input {tuple(x.shape)})')
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.pre_norm(torch.cat([cls, tokens], dim=1) + self.pos_embed)


class StaticClsTokenHead(nn.Module):
    """The final norm on the class token's first ``width`` channels, and the
    linear classifier."""

    def __init__(self, norm: Optional[nn.Module], width: int,
                 fc: nn.Module) -> None:
        super().__init__()
        self.norm = nn.Identity() if norm is None else norm
        self.width = width
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0, :self.width]))


def build_vit(model: nn.Module, spec: SubnetSpec, layers) -> StaticNet:
    """Walk a DS-ViT classifier at ``spec``, building every layer with
    ``layers`` (a :class:`~dsnet_mm.deploy.StaticLayers` or the indexing
    baseline's builder).

    Args:
        model (nn.Module): A classifier with a ``DSViT`` backbone
            (``out_type='cls_token'``, no neck) and a ``DSLinearClsHead``.
        spec (SubnetSpec): The sub-network.
        layers: The layer builder.

    Returns:
        StaticNet: the network (embedding; blocks and the gate's SE; the
        class token's norm and the classifier), in eval mode.
    """
    bb = model.backbone
    if bb.out_type != 'cls_token' or model.with_neck or \
            bb.out_indices != (bb.num_layers - 1, ) or \
            bb.patch_embed.norm is not None:
        raise ValueError(
            'a static DS-ViT is built for out_type=cls_token, '
            'out_indices=-1, no neck and no patch_cfg.norm_cfg, got out_type='
            f'{bb.out_type!r}, out_indices={bb.out_indices}, neck='
            f'{type(model.neck).__name__ if model.with_neck else None}, '
            f'patch norm={type(bb.patch_embed.norm).__name__}')
    blocks = []
    for i, layer in enumerate(bb.layers):
        d, h, m = (spec[g] for g in block_groups(i))
        attn, ffn = layer.attn, layer.ffn
        blocks.append(StaticViTBlock(
            d, layers.layer_norm(layer.ln1, d),
            StaticAttention(layers.qkv(attn.qkv, d, h),
                            layers.sliced_linear(attn.proj,
                                                 h * attn.head_dims, d),
                            h, attn.head_dims) if h else None,
            layers.layer_norm(layer.ln2, d),
            StaticMLP(layers.sliced_linear(ffn.fc1, d, m),
                      layers.sliced_linear(ffn.fc2, m, d),
                      copy.deepcopy(ffn.act)) if m else None))
        if i == bb.gate_stage:
            blocks.append(build_se(bb.gate, d, layers))
    width = spec[block_groups(bb.num_layers - 1)[0]] if bb.idle_head \
        else bb.embed_dims
    norm = layers.layer_norm(bb.ln1, width) if bb.final_norm else None
    # the patch embedding is never sliced: a copy for every builder
    patch_embed = copy.deepcopy(bb.patch_embed.projection)
    return StaticNet(
        StaticViTEmbed(patch_embed, bb.cls_token, bb.pos_embed,
                       layers.layer_norm(bb.pre_norm, bb.embed_dims)
                       if bb.with_pre_norm else None), blocks,
        StaticClsTokenHead(norm, width, layers.linear(model.head.fc, width)))
