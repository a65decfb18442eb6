# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The plain torch modules a static sub-network is made of.

A static network is ``head(body(stem(x)))`` (:class:`StaticNet`). In a
network built from a gated model the gate is one layer of the body, an SE
that also holds the slimming head, and :meth:`StaticNet.split_at_gate` cuts
the network there: the part every member of the routing window shares, and
the part a routed image runs.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from dsnet_mm.ops import DSSqueezeExcite, TokenPool, rejoin_idle
from .builder import LayerBuilder, holding


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
             layers: LayerBuilder) -> StaticSqueezeExcite:
    """The static form of ``se`` on inputs ``width`` channels wide (tokens
    if ``se.tokens``): its convs from ``layers``; an SE that also holds a
    slimming head (a gate: ``slim_head`` and ``features``, a 1x1 conv to one
    logit per window member) gets a copy of it (no builder slices it)."""
    convs = (layers.conv(se.conv_reduce, width, se.reduce_channels),
             layers.conv(se.conv_expand, se.reduce_channels, width))
    gate = ()
    head = getattr(se, 'slim_head', None)
    if head is not None:
        c_in = head.in_channels if se.features == 'squeeze' else width
        gate = (holding(nn.Conv2d(c_in, head.out_channels, 1, bias=False),
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


def pool_head(fc: Optional[nn.Module], width: int,
              layers: LayerBuilder) -> nn.Module:
    """A classifier's global pooling and linear head ``fc`` at input
    ``width``; an identity without a classifier (``fc=None``: a detector's
    backbone, whose outputs the neck reads)."""
    if fc is None:
        return nn.Identity()
    return StaticPoolHead(layers.linear(fc, width))


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
