# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced ops of a vision transformer block: LayerNorm, attention, MLP.

Every op runs on a dense prefix of its stored weights, the embedding width
``d`` read from the input's last dimension, the number of heads ``h`` and
the MLP hidden width ``m`` passed explicitly. The head dimension is fixed,
so slicing heads never changes the attention scale.

For per-sample routing (the mask path) every op also takes per-sample masks,
``[B, C]`` tensors of ones and zeros over the channels, heads or hidden
units of the widest width in the batch (e.g. ``MaskedRouting.channel_mask``).
With masks the ops run at the widest width and give, on each sample's active
channels, what the sliced op gives at that sample's widths, and zeros
elsewhere: a LayerNorm takes its statistics over each sample's active
channels only, attention zeroes the context of inactive heads before the
output projection, the MLP zeroes inactive hidden units after the
activation, and every op ignores inactive input channels and zeroes its
inactive output channels. Masks are prefixes (a sample's active units come
first), and a sample with no active head or hidden unit (width 0) gets no
branch output at all, output bias included. (The design is our reading of
DS-Net++, whose method sections we could not check: see
``docs/reference/dsnet_pp.md``.)
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear import DSLinear
from .utils import check_width
from .weight_cache import InferenceCache


def rejoin_idle(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Dynamic idle slicing's output: ``a``, what a block wrote to the
    first ``d`` channels of the stream ``x``, followed by ``x``'s idle
    channels ``d..D`` unchanged."""
    d = a.shape[-1]
    if d == x.shape[-1]:
        return a
    return torch.cat([a, x[..., d:]], dim=-1)


def channel_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``[B, C']`` per-sample mask (``C' >= C``) cut to the ``C`` channels
    of ``x`` (channels last, ``[B, ..., C]``) and shaped to broadcast."""
    width = x.shape[-1]
    if mask.dim() != 2 or mask.shape[0] != x.shape[0] or \
            mask.shape[1] < width:
        raise ValueError(f'a mask must be [B, >= {width}] for an input of '
                         f'shape {tuple(x.shape)}, got {tuple(mask.shape)}')
    return mask[:, :width].reshape(x.shape[0], *[1] * (x.dim() - 2), width)


def _any_active(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per sample, 1 if its prefix ``mask`` keeps any unit, else 0 (its
    first entry), shaped to broadcast over ``out``: a branch at width 0
    gives no output, not its output bias."""
    return mask[:, :1].reshape(-1, *[1] * (out.dim() - 1)).to(out.dtype)


class DSLayerNorm(InferenceCache, nn.LayerNorm):
    """LayerNorm over a prefix of the channels, with a per-sample masked form.

    At input width ``d`` the affine parameters are ``weight[:d]`` and
    ``bias[:d]``, and the mean and variance are taken over those ``d``
    channels only: exactly ``nn.LayerNorm(d)`` holding the sliced
    parameters. With ``mask`` (``[B, >= d]``), each sample's statistics are
    taken over its active channels only (a plain LayerNorm followed by a mask
    would mix inactive channels into them) and inactive channels come out
    zero. The module subclasses ``nn.LayerNorm`` so that mmengine's norm
    handling (no weight decay on norms, ``layer='LayerNorm'`` inits) and the
    MAdds counter treat it as a LayerNorm.

    Args:
        num_features (int): Widest number of channels.
        eps (float): Added to the variance. Defaults to 1e-6 (ViT's).
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__(num_features, eps=eps)
        self.num_features = num_features

    def forward(self,
                x: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        d = x.shape[-1]
        if self.inference():
            weight, bias = self.hit(d) or self.cached(
                d, lambda: self.sliced(d, copy=True))
        else:
            weight, bias = self.sliced(d)
        if mask is None:
            return F.layer_norm(x, (d, ), weight, bias, self.eps)
        m = channel_mask(mask, x).to(x.dtype)
        count = m.sum(-1, keepdim=True).clamp_min(1)
        mean = (x * m).sum(-1, keepdim=True) / count
        centred = (x - mean) * m
        var = centred.pow(2).sum(-1, keepdim=True) / count
        return (centred * torch.rsqrt(var + self.eps) * weight + bias) * m

    def sliced(self, d: int, copy: bool = False) -> Tuple:
        """(weight, bias) at width ``d``: views, or with ``copy`` detached
        copies (the cached form)."""
        check_width('num_features', d, self.num_features)
        weight, bias = self.weight[:d], self.bias[:d]
        if copy:
            weight, bias = weight.detach().clone(), bias.detach().clone()
        return weight, bias

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


class DSQKVLinear(InferenceCache):
    """The query, key and value projection, sliced by heads and input width.

    The weight is stored as in ``nn.Linear(embed_dims, 3 * num_heads *
    head_dims)`` (rows ``[q | k | v]``, each split into heads: the layout of
    mmpretrain and timm) and read as ``(3, num_heads, head_dims,
    embed_dims)``: ``h`` heads at input width ``d`` use ``[:, :h, :, :d]``,
    so q, k and v each stay a dense prefix (strided q/k/v rows would not).
    In training that is one matmul on a view of the weight at all heads and
    three matmuls on views otherwise (the three prefixes do not form one
    view); in cached inference one matmul on a cached contiguous copy.

    Args:
        embed_dims (int): Widest input width.
        num_heads (int): Stored number of heads.
        head_dims (int): Channels per head (fixed).
        bias (bool): Whether to add a bias. Defaults to True.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 head_dims: int,
                 bias: bool = True) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = head_dims
        out_features = 3 * num_heads * head_dims
        self.weight = nn.Parameter(torch.empty(out_features, embed_dims))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init scaled by the output width, as ``DSLinear``."""
        bound = 1.0 / math.sqrt(self.weight.shape[0])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, heads: Optional[int] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v), each ``[B, h, N, head_dims]``, from ``x`` ``[B, N, d]``
        at ``heads`` heads (default: all)."""
        d = x.shape[-1]
        h = self.num_heads if heads is None else heads
        if self.inference():
            weight, bias = self.hit((d, h)) or self.cached(
                (d, h), lambda: self.sliced(d, h, copy=True))
        elif h == self.num_heads:
            weight, bias = self.sliced(d, h)
        else:
            return self._split(x, h)
        qkv = F.linear(x, weight, bias).unflatten(-1, (3, h, self.head_dims))
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def sliced(self, d: int, h: int, copy: bool = False) -> Tuple:
        """(weight, bias) of all three projections as one matrix at ``d``
        inputs and ``h`` heads: a view at all heads; with ``copy``, detached
        and contiguous (the cached form)."""
        check_width('embed_dims', d, self.embed_dims)
        check_width('heads', h, self.num_heads)
        rows = h * self.head_dims
        weight = self.weight.view(3, -1, self.embed_dims)[:, :rows, :d]
        weight = weight.reshape(3 * rows, d)
        bias = None if self.bias is None else \
            self.bias.view(3, -1)[:, :rows].reshape(-1)
        if copy:
            weight = weight.detach().contiguous()
            bias = None if bias is None else bias.detach()
        return weight, bias

    def _split(self, x: torch.Tensor, h: int) -> Tuple:
        """q, k and v from three matmuls on views of the weight."""
        d = x.shape[-1]
        check_width('embed_dims', d, self.embed_dims)
        check_width('heads', h, self.num_heads)
        rows = h * self.head_dims
        weight = self.weight.view(3, -1, self.embed_dims)
        bias = None if self.bias is None else self.bias.view(3, -1)
        return tuple(
            F.linear(x, weight[j, :rows, :d],
                     None if bias is None else bias[j, :rows]).unflatten(
                         -1, (h, self.head_dims)).transpose(1, 2)
            for j in range(3))

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'head_dims={self.head_dims}, bias={self.bias is not None}')


class AttentionCore(nn.Module):
    """``softmax(q k^T / sqrt(head_dims)) v`` per head, holding no weights.

    A module of its own so that counters can hook the two matmuls (see
    :func:`~dsnet_mm.models.complexity.count_complexity`). Optionally zeroes the
    context of each sample's inactive heads (``head_mask``, ``[B, >= h]``).

    Args:
        attn_drop (float): Dropout rate of the attention weights in
            training. Defaults to 0.
    """

    def __init__(self, attn_drop: float = 0.) -> None:
        super().__init__()
        self.attn_drop = attn_drop

    def forward(self,
                q: torch.Tensor,
                k: torch.Tensor,
                v: torch.Tensor,
                head_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        if head_mask is None:
            return out
        h = q.shape[1]
        return out * head_mask[:, :h, None, None].to(out.dtype)


class DSMultiheadAttention(nn.Module):
    """Multi-head self-attention sliced by heads at a fixed head dimension.

    At input width ``d`` and ``h`` heads: q, k and v from
    :class:`DSQKVLinear` at ``[:, :h, :, :d]``, attention per head, and the
    output projection reads the ``h * head_dims`` context channels and writes
    ``d`` channels (``proj.weight[:d, :h * head_dims]``, a
    :class:`~dsnet_mm.ops.DSLinear`). Parameter names follow mmpretrain's
    ``MultiheadAttention`` (``qkv``, ``proj``).

    Args:
        embed_dims (int): Widest embedding width.
        num_heads (int): Stored number of heads; must divide ``embed_dims``
            (the head dimension is ``embed_dims // num_heads``).
        qkv_bias (bool): Whether q, k and v have a bias. Defaults to True.
        attn_drop (float): Dropout rate of the attention weights.
            Defaults to 0.
        proj_drop (float): Dropout rate after the output projection.
            Defaults to 0.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1 or \
                embed_dims % num_heads:
            allowed = [n for n in range(1, embed_dims + 1)
                       if embed_dims % n == 0]
            raise ValueError(
                f'num_heads={num_heads!r} must divide embed_dims='
                f'{embed_dims} (the head dimension is fixed at embed_dims / '
                f'num_heads); allowed: {allowed}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.qkv = DSQKVLinear(embed_dims, num_heads, self.head_dims,
                               qkv_bias)
        self.core = AttentionCore(attn_drop)
        self.proj = DSLinear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self,
                x: torch.Tensor,
                heads: Optional[int] = None,
                head_mask: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention over the tokens of ``x`` (``[B, N, d]``).

        Args:
            x (Tensor): The (normalised) tokens.
            heads (int, optional): Heads to run; defaults to all.
            head_mask (Tensor, optional): ``[B, >= heads]`` per-sample head
                mask.
            mask (Tensor, optional): ``[B, >= d]`` per-sample channel mask
                of the input and output.
        """
        if mask is not None:
            x = x * channel_mask(mask, x).to(x.dtype)
        q, k, v = self.qkv(x, heads)
        b, h, n, _ = q.shape
        context = self.core(q, k, v, head_mask)
        out = self.proj_drop(
            self.proj(context.transpose(1, 2).reshape(b, n, -1),
                      x.shape[-1]))
        if head_mask is not None:
            out = out * _any_active(head_mask, out)
        if mask is not None:
            out = out * channel_mask(mask, out).to(out.dtype)
        return out


class DSMLP(nn.Module):
    """The transformer MLP, sliced by hidden width: ``fc2(act(fc1(x)))``.

    At input width ``d`` and hidden width ``m``: ``fc1.weight[:m, :d]`` and
    ``fc2.weight[:d, :m]`` (both :class:`~dsnet_mm.ops.DSLinear`), the
    activation (GELU by default) in between. The layers sit where
    mmpretrain's ``FFN`` keeps them, ``layers.0.0`` (fc1, in a Sequential
    with the activation and a dropout), ``layers.1`` (fc2) and a dropout
    ``layers.2``, so the state-dict keys are mmpretrain's; ``fc1``, ``fc2``
    and ``act`` name them.

    Args:
        embed_dims (int): Widest input (and output) width.
        hidden_dims (int): Widest hidden width.
        act (nn.Module, optional): An element-wise activation. Defaults to
            None (``nn.GELU()``).
        drop (float): Dropout rate after the activation and after fc2.
            Defaults to 0.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act: Optional[nn.Module] = None,
                 drop: float = 0.) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.hidden_dims = hidden_dims
        self.layers = nn.Sequential(
            nn.Sequential(DSLinear(embed_dims, hidden_dims),
                          nn.GELU() if act is None else act,
                          nn.Dropout(drop)),
            DSLinear(hidden_dims, embed_dims), nn.Dropout(drop))

    @property
    def feedforward_channels(self) -> int:
        """The widest hidden width (mmpretrain's ``FFN`` attribute)."""
        return self.hidden_dims

    @property
    def fc1(self) -> DSLinear:
        return self.layers[0][0]

    @property
    def act(self) -> nn.Module:
        return self.layers[0][1]

    @property
    def fc2(self) -> DSLinear:
        return self.layers[1]

    def forward(self,
                x: torch.Tensor,
                hidden: Optional[int] = None,
                hidden_mask: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The MLP on ``x`` (``[B, ..., d]``).

        Args:
            x (Tensor): The (normalised) tokens.
            hidden (int, optional): Hidden width; defaults to all.
            hidden_mask (Tensor, optional): ``[B, >= hidden]`` per-sample
                mask of the hidden units (applied after the activation).
            mask (Tensor, optional): ``[B, >= d]`` per-sample channel mask
                of the input and output.
        """
        if mask is not None:
            x = x * channel_mask(mask, x).to(x.dtype)
        y = self.layers[0][2](self.act(self.fc1(x, hidden)))
        if hidden_mask is not None:
            y = y * channel_mask(hidden_mask, y).to(y.dtype)
        out = self.layers[2](self.fc2(y, x.shape[-1]))
        if hidden_mask is not None:
            out = out * _any_active(hidden_mask, out)
        if mask is not None:
            out = out * channel_mask(mask, out).to(out.dtype)
        return out
