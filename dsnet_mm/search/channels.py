# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Which tensor axes each width group indexes, and consistent reordering.

A sub-network keeps a dense prefix of every width group, so the progressive
search needs the channels it wants to keep *first*. :class:`ChannelAxes`
lists, for each group, every ``(tensor name, dim)`` whose entries are that
group's channels: conv output rows and the next layers' input columns, BN
affine parameters and every statistics row, the SE's (or gate's) reduce
columns and expand rows, projection shortcuts and the classifier's input.
A DS backbone fills it in ``describe_channels(axes)``; permuting all of a
group's axes by one permutation leaves the network's function unchanged
(:func:`permute_channels`), so a prefix slice afterwards keeps the channels
ranked most important.

A group is also split into **layers**: the channels one full conv produces
(with the depthwise convs, BNs and SE after it, up to the next full conv
producing the group, whose input columns they are). Each layer's channels
are unrelated to another layer's channel of the same index, so every layer
can take a permutation of its own (``ranking_scope='layer'``). Convs that
add into one stream (a residual stage) are ``tied``: they share a layer.
"""
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from dsnet_mm.ops import DSConv2d

Axis = Tuple[str, int]  # (tensor name in the model, dim)
SCOPES = ('group', 'layer')


class ChannelAxes:
    """The channel axes of every width group, and the convs producing them.

    Names are relative to ``prefix`` (e.g. ``'backbone.'``) and resolve with
    the model's ``get_parameter`` / ``get_buffer``.

    Args:
        prefix (str): Prepended to every name. Defaults to ``''``.
    """

    def __init__(self, prefix: str = '') -> None:
        self.prefix = prefix
        self.axes: Dict[str, List[Axis]] = defaultdict(list)
        # group -> conv weights whose output rows are the group's channels:
        # the layers that carry ranking noise and whose rows are ranked
        self.producers: Dict[str, List[str]] = defaultdict(list)
        # group -> its layers, each dict(axes=[...], producers=[...]); the
        # last one is open: what is added to the group now belongs to it
        self.layers: Dict[str, List[dict]] = defaultdict(list)

    def _layer(self, group: str, new: bool = False) -> dict:
        if new or not self.layers[group]:
            self.layers[group].append(dict(axes=[], producers=[]))
        return self.layers[group][-1]

    def add(self, group: str, name: str, dim: int) -> None:
        self.axes[group].append((self.prefix + name, dim))
        self._layer(group)['axes'].append((self.prefix + name, dim))

    def conv(self, name: str, conv: DSConv2d, in_group: Optional[str],
             out_group: str, tied: bool = False) -> None:
        """A full or depthwise conv from ``in_group`` (None: the image) to
        ``out_group``. A full conv starts a new layer of ``out_group``
        unless ``tied`` (its output adds into the group's open layer, as a
        residual stream's convs do); a depthwise conv stays in the open
        layer."""
        if conv.group_channels not in (None, 1):
            raise NotImplementedError(
                f'{name}: channels of a grouped conv (group_channels='
                f'{conv.group_channels}) cannot be reordered freely')
        depthwise = conv.group_channels == 1
        if depthwise and in_group != out_group:
            raise ValueError(f'{name}: a depthwise conv keeps its group, got '
                             f'{in_group!r} -> {out_group!r}')
        if in_group is not None and not depthwise:
            # the input columns belong to the layer open before this conv
            self.add(in_group, f'{name}.weight', 1)
        self._layer(out_group, new=not (depthwise or tied))
        self.add(out_group, f'{name}.weight', 0)
        if conv.bias is not None:
            self.add(out_group, f'{name}.bias', 0)
        self.producers[out_group].append(self.prefix + f'{name}.weight')
        self._layer(out_group)['producers'].append(
            self.prefix + f'{name}.weight')

    def units(self, scope: str = 'group') -> Dict[object, dict]:
        """What one permutation covers: ``{group: dict(axes, producers)}``
        (``scope='group'``) or ``{(group, i): ...}``, one per layer
        (``'layer'``)."""
        if scope == 'group':
            return {g: dict(axes=self.axes[g], producers=self.producers[g])
                    for g in self.axes}
        if scope == 'layer':
            return {(g, i): layer for g, layers in self.layers.items()
                    for i, layer in enumerate(layers)}
        raise ValueError(f'ranking_scope must be one of {SCOPES}, got '
                         f'{scope!r}')

    def bn(self, name: str, group: str) -> None:
        """A ``DSBatchNorm2d``: affine parameters and every statistics row."""
        for tensor, dim in (('weight', 0), ('bias', 0), ('running_mean', 1),
                            ('running_var', 1)):
            self.add(group, f'{name}.{tensor}', dim)

    def se(self, name: str, se: nn.Module, group: str) -> None:
        """An SE (or a ``DSGate``) on ``group``: the reduce conv's input
        columns and the expand conv's rows; a gate's slimming head on the
        pooled input reads ``group`` too. The squeeze width is not a group."""
        self.add(group, f'{name}.conv_reduce.weight', 1)
        self.add(group, f'{name}.conv_expand.weight', 0)
        self.add(group, f'{name}.conv_expand.bias', 0)
        if getattr(se, 'features', None) == 'pooled':
            self.add(group, f'{name}.slim_head.weight', 1)

    def linear_in(self, name: str, group: str) -> None:
        """A linear layer reading ``group`` (the classifier)."""
        self.add(group, f'{name}.weight', 1)


def classifier_axes(model: nn.Module) -> ChannelAxes:
    """The channel axes of an mmpretrain classifier over a DS backbone.

    The backbone describes itself (``describe_channels``, returning the
    group of its output); a parameter-free neck (global pooling) keeps it and
    the head's ``fc`` reads it.
    """
    backbone = model.backbone
    if not hasattr(backbone, 'describe_channels'):
        raise TypeError(
            f'{type(backbone).__name__} has no channel axes for the '
            'progressive search (no describe_channels, which a backbone of '
            'stages of blocks gets from StagedBackboneMixin): the search '
            'reorders DSMobileNetV1 and DSResNet; in DS-ViT every block\'s '
            'embedding group indexes one shared stream axis and heads move '
            'in blocks of head_dims rows of q, k and v')
    if getattr(model, 'with_neck', False) and \
            any(True for _ in model.neck.parameters()):
        raise NotImplementedError(
            'the neck has parameters: its channel axes are unknown')
    axes = ChannelAxes('backbone.')
    out_group = backbone.describe_channels(axes)
    axes.prefix = 'head.'
    axes.linear_in('fc', out_group)
    axes.prefix = ''
    return axes


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    return _stored(model, name, 1)[0]


def _stored(model: nn.Module, name: str, dim: int) -> List[torch.Tensor]:
    """The stored tensors behind ``name`` whose ``dim`` indexes channels: the
    tensor itself or, for a weight under ranking noise (a parametrization),
    the plain weight and, on its rows, the per-row noise scales."""
    module_name, _, attr = name.rpartition('.')
    module = model.get_submodule(module_name)
    if not parametrize.is_parametrized(module, attr):
        return [getattr(module, attr)]
    plist = module.parametrizations[attr]
    noise = [p.alpha for p in plist if dim == 0 and hasattr(p, 'alpha')]
    return [plist.original] + noise


@torch.no_grad()
def permute_channels(model: nn.Module, axes: ChannelAxes,
                     perms: Mapping[object, torch.Tensor]) -> None:
    """Reorder channels in place: new channel ``i`` is old channel
    ``perms[key][i]`` on every axis of ``key``, a width group (all of its
    layers alike) or a ``(group, layer)`` pair (:meth:`ChannelAxes.units`),
    so the network computes the same function. Weights under ranking noise
    are permuted with their noise scales."""
    layers = axes.units('layer')
    for key, perm in perms.items():
        if key in axes.axes:
            entries = axes.axes[key]
        elif key in layers:
            entries = layers[key]['axes']
        else:
            raise ValueError(f'unknown width group {key!r}; known: '
                             f'{sorted(axes.axes)} or (group, layer) pairs')
        perm = torch.as_tensor(perm, dtype=torch.long)
        for name, dim in entries:
            for tensor in _stored(model, name, dim):
                if tensor.shape[dim] != perm.numel() or not torch.equal(
                        perm.sort().values, torch.arange(perm.numel())):
                    raise ValueError(
                        f'perms[{key!r}] must be a permutation of '
                        f'0..{tensor.shape[dim] - 1} (the width of {name}), '
                        f'got {perm.numel()} entries')
                tensor.copy_(tensor.index_select(dim,
                                                 perm.to(tensor.device)))


def channel_scores(axes: ChannelAxes,
                   per_layer: Mapping[str, torch.Tensor],
                   scope: str = 'group') -> Dict[object, torch.Tensor]:
    """The score of each channel of each group (``scope='group'``) or of
    each layer (``'layer'``, keyed ``(group, i)``): the mean, over the convs
    producing it, of each conv's per-row score normalised by its own mean
    (so a wide or strongly scaled layer does not outweigh the others).

    Args:
        axes (ChannelAxes): The classifier's channel axes.
        per_layer (Mapping[str, Tensor]): A score per output row of every
            producing conv weight (by name).
        scope (str): ``'group'`` or ``'layer'``. Defaults to ``'group'``.
    """
    scores = {}
    for key, unit in axes.units(scope).items():
        rows = []
        for name in unit['producers']:
            s = per_layer[name].detach().float().flatten()
            rows.append(s / s.mean().clamp_min(1e-12))
        scores[key] = torch.stack(rows).mean(0)
    return scores


def l1_scores(model: nn.Module, axes: ChannelAxes,
              scope: str = 'group') -> Dict[object, torch.Tensor]:
    """L1-norm ranking (the baseline): each producing conv's row L1 norm."""
    per_layer = {
        name: _tensor(model, name).detach().abs().flatten(1).sum(1)
        for names in axes.producers.values() for name in names
    }
    return channel_scores(axes, per_layer, scope)
