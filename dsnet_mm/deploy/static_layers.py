# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The pieces every static sub-network is built from.

A static network is ``head(body(stem(x)))`` (:class:`StaticNet`) of plain
torch layers holding copies of the sliced weights. :class:`StaticLayers`
builds each layer (BN folded into its conv for export, or kept as
``nn.BatchNorm2d``); the backbone walks (``static_mbnet``, ``static_resnet``,
``static_vit``) call it, or another builder with the same methods, e.g. the
gather-indexing baseline of the benchmark. In a network built from a gated
model the gate is one layer of the body, an SE that also holds the slimming
head, and :meth:`StaticNet.split_at_gate` cuts the network there: the part
every member of the routing window shares, and the part a routed image runs.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from dsnet_mm.models.gates import DSGate
from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLayerNorm, DSLinear,
                          DSQKVLinear, DSSqueezeExcite, TokenPool,
                          rejoin_idle)


def _static_conv(conv: DSConv2d, c_in: int, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], groups: int) -> nn.Conv2d:
    """``nn.Conv2d`` with ``conv``'s geometry holding copies of ``weight``
    and ``bias``."""
    k = weight.shape[-1]
    return _holding(
        nn.Conv2d(c_in, weight.shape[0], k, conv.stride, conv.padding_for(k),
                  conv.dilation, groups, bias=bias is not None), weight, bias)


def _holding(static: nn.Module, weight: torch.Tensor,
             bias: Optional[torch.Tensor]) -> nn.Module:
    """``static`` with copies of ``weight`` and ``bias`` in its own."""
    with torch.no_grad():
        static.weight.copy_(weight)
        if bias is not None:
            static.bias.copy_(bias)
    return static


def fold_conv_bn(conv: DSConv2d, bn: DSBatchNorm2d, c_in: int, c_out: int,
                 row: int, kernel: Optional[int] = None) -> nn.Conv2d:
    """``nn.Conv2d`` at ``(c_in, c_out)`` and ``kernel`` with BN row ``row``
    folded in."""
    return _static_conv(conv, c_in, *conv.folded(
        c_in, c_out, bn, row, kernel_size=kernel))


def _copied_conv(conv: DSConv2d, c_in: int, c_out: int,
                 kernel: Optional[int] = None) -> nn.Conv2d:
    """``nn.Conv2d`` at ``(c_in, c_out)`` and ``kernel`` holding a copy of
    the slice."""
    return _static_conv(conv, c_in, *conv.sliced(c_in, c_out,
                                                 kernel_size=kernel))


def _copied_bn(bn: DSBatchNorm2d, c: int, row: int) -> nn.BatchNorm2d:
    static = nn.BatchNorm2d(c, bn.eps)
    with torch.no_grad():
        static.weight.copy_(bn.weight[:c])
        static.bias.copy_(bn.bias[:c])
        static.running_mean.copy_(bn.running_mean[row, :c])
        static.running_var.copy_(bn.running_var[row, :c])
    return static


def _copied_linear(weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> nn.Linear:
    return _holding(nn.Linear(weight.shape[1], weight.shape[0],
                              bias=bias is not None), weight, bias)


class StaticLayers:
    """Builds each layer of a sub-network as a plain torch layer with a copy
    of its sliced weights.

    Args:
        fold_bn (bool): Fold each BN into its conv (deployment), or keep
            ``nn.BatchNorm2d`` layers, which run the very operations of the
            slice path (the fair speed limit of slicing). Defaults to True.
    """

    def __init__(self, fold_bn: bool = True) -> None:
        self.fold_bn = fold_bn

    def conv_bn(self, conv: DSConv2d, bn: DSBatchNorm2d, c_in: int,
                c_out: int, row: int,
                kernel: Optional[int] = None) -> nn.Module:
        if self.fold_bn:
            return fold_conv_bn(conv, bn, c_in, c_out, row, kernel)
        return nn.Sequential(
            _copied_conv(conv, c_in, c_out, kernel),
            _copied_bn(bn, c_out, row))

    def conv(self, conv: DSConv2d, c_in: int, c_out: int) -> nn.Module:
        return _copied_conv(conv, c_in, c_out)

    def linear(self, fc: nn.Module, c_in: int) -> nn.Module:
        """A classifier reading the first ``c_in`` inputs."""
        return _copied_linear(fc.weight[:, :c_in], fc.bias)

    def sliced_linear(self, fc: DSLinear, c_in: int,
                      c_out: int) -> nn.Linear:
        return _copied_linear(*fc._sliced(c_in, c_out))

    def qkv(self, qkv: DSQKVLinear, d: int, heads: int) -> nn.Linear:
        """q, k and v of ``heads`` heads from ``d`` inputs, one matmul."""
        return _copied_linear(*qkv._merged(d, heads))

    def layer_norm(self, ln: DSLayerNorm, d: int) -> nn.LayerNorm:
        return _holding(nn.LayerNorm(d, eps=ln.eps), ln.weight[:d],
                        ln.bias[:d])


class StaticSqueezeExcite(nn.Module):
    """Plain SE: pooling, 1x1 reduce, ReLU, 1x1 expand, sigmoid scaling.

    Built from a gate (:class:`~dsnet_mm.models.gates.DSGate`) it also holds
    the slimming head: :meth:`forward_gate` gives the slimming logits beside
    the scaled input, as the gate does; ``forward`` is the attention alone,
    as when a fixed sub-network runs.

    Args:
        reduce (nn.Module): The 1x1 reduce conv.
        expand (nn.Module): The 1x1 expand conv.
        slim_head (nn.Module, optional): The gate's slimming head (a 1x1
            conv to one logit per window member). Defaults to None (a plain
            SE).
        features (str): What the slimming head reads: ``'squeeze'`` (the
            reduced vector) or ``'pooled'`` (the pooled input), as the
            gate's ``features``. Defaults to ``'squeeze'``.
    """

    def __init__(self,
                 reduce: nn.Module,
                 expand: nn.Module,
                 slim_head: Optional[nn.Module] = None,
                 features: str = 'squeeze') -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = reduce
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = expand
        self.slim_head = slim_head
        self.features = features

    def squeeze(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(pooled input ``[B, C, 1, 1]``, reduced vector)."""
        pooled = self.pool(x)
        return pooled, self.act(self.conv_reduce(pooled))

    def rescale(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``x`` with its channels multiplied by ``sigmoid(scale)``."""
        return x * scale.sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rescale(x, self.conv_expand(self.squeeze(x)[1]))

    def forward_gate(self,
                     x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(``x`` scaled by the attention, slimming logits ``[B, window]``)."""
        pooled, r = self.squeeze(x)
        logits = self.slim_head(r if self.features == 'squeeze' else pooled)
        return self.rescale(x, self.conv_expand(r)), logits.flatten(1)


class StaticTokenSE(StaticSqueezeExcite):
    """The gate's attention head on tokens: the class token's (or mean patch
    token's) SE scales the first ``width`` channels of every token; the
    stream's other channels pass through.

    Args:
        width (int): The channels the SE reads and scales.
        mode (str): ``'cls_token'`` or ``'mean'`` (see
            :class:`~dsnet_mm.ops.TokenPool`).
        reduce, expand, slim_head, features: As
            :class:`StaticSqueezeExcite`.
    """

    def __init__(self,
                 width: int,
                 mode: str,
                 reduce: nn.Module,
                 expand: nn.Module,
                 slim_head: Optional[nn.Module] = None,
                 features: str = 'squeeze') -> None:
        super().__init__(reduce, expand, slim_head, features)
        self.width = width
        self.pool = TokenPool(mode)  # plain torch (where MAdds are counted)

    def squeeze(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return super().squeeze(x[..., :self.width])

    def rescale(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        a = x[..., :self.width]
        return rejoin_idle(a * scale.flatten(1).sigmoid().unsqueeze(1), x)


def build_se(se: DSSqueezeExcite, width: int,
             layers) -> StaticSqueezeExcite:
    """The static form of ``se`` on inputs ``width`` channels wide (tokens
    if ``se.tokens``): its convs from ``layers``, and a gate's slimming head
    (a copy: no builder slices it)."""
    convs = (layers.conv(se.conv_reduce, width, se.reduce_channels),
             layers.conv(se.conv_expand, se.reduce_channels, width))
    gate = ()
    if isinstance(se, DSGate):
        head = se.slim_head
        c_in = head.in_channels if se.features == 'squeeze' else width
        gate = (_holding(nn.Conv2d(c_in, se.num_choices, 1, bias=False),
                         head.weight[:, :c_in], None), se.features)
    if se.tokens is None:
        return StaticSqueezeExcite(*convs, *gate)
    return StaticTokenSE(width, se.tokens, *convs, *gate)


class StaticPoolHead(nn.Module):
    """Global average pooling and the linear classifier."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def pool_head(model: nn.Module, width: int, layers) -> nn.Module:
    """The classifier's global pooling and linear head at input ``width``;
    an identity for a model without a classification head (a detector,
    whose backbone outputs the neck reads)."""
    if getattr(model, 'head', None) is None:
        return nn.Identity()
    return StaticPoolHead(layers.linear(model.head.fc, width))


class StaticPreGate(nn.Module):
    """Images to (features after the gate's attention, slimming logits): the
    part of a gated network that every member of its window shares.

    Args:
        features (nn.Module): Everything before the gate.
        gate (StaticSqueezeExcite): The gate (holding a slimming head).
    """

    def __init__(self, features: nn.Module,
                 gate: StaticSqueezeExcite) -> None:
        super().__init__()
        self.features = features
        self.gate = gate

    def forward(self,
                x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.gate.forward_gate(self.features(x))


class StaticNet(nn.Module):
    """A static sub-network: ``head(body(stem(x)))``, in eval mode.

    Args:
        stem (nn.Module): From the input to the first block.
        body (Sequence[nn.Module]): The layers between stem and head, in
            order; built from a gated model, one of them is the gate.
        head (nn.Module): From the last block to the class logits
            (``nn.Identity`` for a detector's backbone).
        stage_ends (Sequence[int]): For each stage of the backbone, the
            number of ``body`` layers up to its end (its output is that of
            ``body[stage_ends[i] - 1]``). Defaults to ().
    """

    def __init__(self, stem: nn.Module, body: Sequence[nn.Module],
                 head: nn.Module, stage_ends: Sequence[int] = ()) -> None:
        super().__init__()
        self.stem = stem
        self.body = nn.Sequential(*body)
        self.head = head
        self.stage_ends = tuple(stage_ends)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))

    def split_at_gate(self) -> Tuple[StaticPreGate, 'StaticNet']:
        """The network cut at its gate: (:class:`StaticPreGate`, the rest:
        features after the gate's attention to class logits). Both parts
        share this network's layers."""
        gates = [i for i, m in enumerate(self.body)
                 if isinstance(m, StaticSqueezeExcite)
                 and m.slim_head is not None]
        if len(gates) != 1:
            raise ValueError(
                f'split_at_gate needs a network with one gate, this one has '
                f'{len(gates)}: build it from a model whose backbone has a '
                'gate (a DSGateClassifier)')
        g = gates[0]
        return (StaticPreGate(nn.Sequential(self.stem, *self.body[:g]),
                              self.body[g]),
                StaticNet(nn.Identity(), self.body[g + 1:], self.head))
