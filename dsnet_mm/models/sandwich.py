# Copyright (c) dsnet_mm contributors. All rights reserved.
"""What every model trained by the sandwich rule shares (the classifier,
the detectors): the random members' sampling, its checks, and the stop
before a non-finite loss reaches the weights."""
import random
from typing import List

import torch

from dsnet_mm.ops.utils import check_choice, check_int
from .subnet import SubnetSpace, SubnetSpec

SAMPLING_MODES = ('list', 'usnet')


def check_sandwich_sampling(num_random: int, seed: int, sampling: str,
                            usnet_divisor: int) -> None:
    """Check the arguments of :func:`sample_random_subnets` that a sandwich
    model takes from its config."""
    check_choice('sampling', sampling, SAMPLING_MODES)
    check_int('usnet_divisor', usnet_divisor, 1)
    check_int('num_random', num_random, 0)
    check_int('seed', seed, 0)


def check_finite_loss(loss: torch.Tensor, iteration: int, spec: SubnetSpec,
                      suspect: str) -> None:
    """Stop a sandwich iteration before a non-finite loss reaches the
    weights: raised before any backward or optimizer step of the
    iteration, so the parameters and the last checkpoint stay as they were
    (``suspect``: what to check besides the learning rate)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f'loss is {loss.item()} at sandwich iteration {iteration} in '
            f'sub-network {spec.name} ({dict(spec)}); the last checkpoint is '
            f'untouched. Lower the learning rate or check {suspect}.')


def sample_random_subnets(space: SubnetSpace, num_random: int, seed: int,
                          iteration: int, sampling: str = 'list',
                          usnet_divisor: int = 1,
                          draw_largest: bool = True) -> List[SubnetSpec]:
    """The random members of sandwich iteration ``iteration``.

    Every model trained by the sandwich rule (the classifier, the detector)
    draws them here: indices ``1..len-1`` of the list (as the reference
    draws them) with ``sampling='list'``, or US-Net's one width ratio
    ``t ~ U(0, 1)`` for every group (``'usnet'``, see
    :meth:`~dsnet_mm.models.subnet.SubnetSpace.interpolate`). The generator
    is seeded by ``seed`` and the iteration, so a resumed run draws the same
    widths and every rank of a distributed run draws alike. With
    ``draw_largest=False`` the list's widest is left out of the draws when
    it is the largest (which every iteration trains anyway).
    """
    rng = random.Random(seed * 1_000_003 + int(iteration))
    if sampling == 'usnet':
        return [
            space.adhoc(space.interpolate(rng.random(), usnet_divisor),
                        name='usnet') for _ in range(num_random)
        ]
    high = len(space) - 1
    if not draw_largest and dict(space[high]) == dict(space.largest):
        high -= 1
    if high < 1:
        return []
    return [space[rng.randint(1, high)] for _ in range(num_random)]
