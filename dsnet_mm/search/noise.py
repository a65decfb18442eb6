# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Trainable noise ranking (parametric noise injection, per output channel).

In training, each searchable conv runs on ``W + alpha[c] * std(W) * N(0, 1)``
(a fresh draw every forward; ``std(W)`` one scalar per layer, without
gradient); in eval on ``W``. ``alpha`` starts at 0 and is trained with the
network (the "base-noise" stage) but gets no weight decay. A channel whose
learned noise scale stays large tolerates perturbation, so by default it
is ranked least important and removed first (``order='descending'``, the
authors' ResNet/MobileNetV1 scripts; ``'ascending'`` is their MobileNetV2
script's reading; ``docs/reference/progressive_search.md``).

The noise is a ``torch.nn.utils.parametrize`` parametrization of the conv's
``weight``: the op itself is untouched, and :func:`remove_channel_noise`
leaves the plain trained weights behind. With ``keep_noise`` the search
keeps it: :func:`channel_alphas` reads the scales, and
:func:`noisy_scoring` turns the noise on while candidates are scored.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .channels import ChannelAxes, channel_scores

NOISE_ORDERS = ('descending', 'ascending')


class ChannelNoise(nn.Module):
    """The parametrization: per-output-channel scaled Gaussian noise.

    Args:
        out_channels (int): Rows of the weight it perturbs.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(out_channels))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return weight
        std = weight.detach().std()
        noise = torch.randn_like(weight) * std
        shape = (-1, ) + (1, ) * (weight.dim() - 1)
        return weight + self.alpha.view(shape) * noise


def _owner(model: nn.Module, weight_name: str) -> nn.Module:
    return model.get_submodule(weight_name.rpartition('.')[0])


def add_channel_noise(model: nn.Module, axes: ChannelAxes) -> List[str]:
    """Put :class:`ChannelNoise` on every conv that produces a group's
    channels; returns the names of their ``alpha`` parameters."""
    names = []
    for weight_names in axes.producers.values():
        for name in weight_names:
            conv = _owner(model, name)
            if parametrize.is_parametrized(conv, 'weight'):
                continue
            parametrize.register_parametrization(
                conv, 'weight', ChannelNoise(conv.weight.shape[0]))
            names.append(name.rpartition('.')[0] +
                         '.parametrizations.weight.0.alpha')
    return names


def noise_alphas(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every ``alpha`` of the model (what gets no weight decay)."""
    for m in model.modules():
        if isinstance(m, ChannelNoise):
            yield m.alpha


def channel_alphas(model: nn.Module, axes: ChannelAxes
                   ) -> Dict[str, torch.Tensor]:
    """Each producing conv's ``|alpha|`` by weight name (the noise stays)."""
    alphas = {}
    for weight_names in axes.producers.values():
        for name in weight_names:
            conv = _owner(model, name)
            if not parametrize.is_parametrized(conv, 'weight'):
                raise ValueError(f'{name} carries no ranking noise')
            alphas[name] = conv.parametrizations.weight[0].alpha.detach()\
                .abs().clone()
    return alphas


def remove_channel_noise(model: nn.Module, axes: ChannelAxes
                         ) -> Dict[str, torch.Tensor]:
    """Take the noise off, keeping the trained weights; returns each
    producing conv's ``|alpha|`` by weight name."""
    alphas = channel_alphas(model, axes)
    for name in alphas:
        parametrize.remove_parametrizations(
            _owner(model, name), 'weight', leave_parametrized=False)
    return alphas


@contextmanager
def noisy_scoring(model: nn.Module, seed: int) -> Iterator[None]:
    """Inside, the ranking noise is on whatever the model's mode (as the
    paper scores its held-out split in train mode), drawn from ``seed``;
    the global random state and the noise modules' modes are restored
    after."""
    noises = [m for m in model.modules() if isinstance(m, ChannelNoise)]
    modes = [m.training for m in noises]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in noises:
            m.train()
        try:
            yield
        finally:
            for m, mode in zip(noises, modes):
                m.train(mode)


def noise_scores(axes: ChannelAxes,
                 alphas: Dict[str, torch.Tensor],
                 order: str = 'descending',
                 scope: str = 'group') -> Dict[object, torch.Tensor]:
    """Channel importance from the noise scales (higher: kept longer), per
    width group or per layer (``scope``, see
    :func:`~dsnet_mm.search.channels.channel_scores`)."""
    if order not in NOISE_ORDERS:
        raise ValueError(f'noise order must be one of {NOISE_ORDERS}, got '
                         f'{order!r}')
    scores = channel_scores(axes, alphas, scope)
    sign = -1.0 if order == 'descending' else 1.0
    return {g: sign * s for g, s in scores.items()}


def ranking_perms(scores: Dict[object, torch.Tensor]
                  ) -> Dict[object, torch.Tensor]:
    """The permutation of each group (or layer) that puts its most important
    channel first (stable: ties keep their order)."""
    return {g: torch.sort(s, descending=True, stable=True).indices
            for g, s in scores.items()}

