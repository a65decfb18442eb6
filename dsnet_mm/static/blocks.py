# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The static blocks of the residual and transformer networks.

A DS block's ``build_static`` fills these with the layers its builder makes
at the sub-network's widths: :class:`StaticResBlock` for DS-ResNet; for
DS-ViT the attention (one qkv matmul, ``F.scaled_dot_product_attention``),
the MLP, the pre-norm block with dynamic idle slicing written out (the block
reads and writes the first ``d`` channels of the stream, the rest pass
through), the embedding for the stored image size and the class-token head.
"""
from typing import List, Optional

import torch
import torch.nn as nn

from dsnet_mm.ops import AttentionCore, rejoin_idle


class StaticResBlock(nn.Module):
    """Residual block: ``relu(branch(x) + shortcut(x))``.

    Args:
        convs (list[nn.Module]): The residual branch's conv-BN layers (ReLU
            between them).
        shortcut (nn.Module, optional): The projection; None is the
            identity.
    """

    def __init__(self, convs: List[nn.Module],
                 shortcut: Optional[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.shortcut = shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs[:-1]:
            out = self.relu(conv(out))
        out = self.convs[-1](out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class StaticScale(nn.Module):
    """``x * weight``: a copy of a layer scale's first channels."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class StaticAttention(nn.Module):
    """Self-attention of ``heads`` heads: one qkv matmul (rows q, k, v, each
    ``heads * head_dims``), attention, the output projection, then the
    layer scale ``scale`` if given."""

    def __init__(self, qkv: nn.Module, proj: nn.Module, heads: int,
                 head_dims: int, scale: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.qkv = qkv
        self.proj = proj
        self.heads = heads
        self.head_dims = head_dims
        self.core = AttentionCore()  # plain torch (where MAdds are counted)
        self.scale = nn.Identity() if scale is None else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads,
                                      self.head_dims).permute(2, 0, 3, 1,
                                                              4).unbind(0)
        context = self.core(q, k, v)
        return self.scale(
            self.proj(context.transpose(1, 2).reshape(b, n, -1)))


class StaticMLP(nn.Module):
    """``scale(fc2(act(fc1(x))))``; ``act`` defaults to GELU, ``scale`` (a
    layer scale) to none."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module,
                 act: Optional[nn.Module] = None,
                 scale: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.fc1 = fc1
        self.act = nn.GELU() if act is None else act
        self.fc2 = fc2
        self.scale = nn.Identity() if scale is None else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.fc2(self.act(self.fc1(x))))


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
