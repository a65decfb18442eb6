# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-sample routing over a window of sub-networks.

The gate picks, for each image, one sub-network of its routing window. Three
ways run that choice (all give the same predictions):

- slice: each image alone, every layer sliced to its sub-network;
- bucket: the batch split by chosen sub-network, each group run sliced and
  the outputs put back in order (batched speed-up);
- mask: the window's widest sub-network with every channel beyond an image's
  width multiplied by zero, via :class:`MaskedRouting` (differentiable with
  respect to the straight-through one-hot, for gate training).
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .subnet import SubnetSpec


class MaskedRouting:
    """A spec-like object: widest widths, per-sample masks and BN statistics.

    Layers read ``routing[group]`` (the window's widest width), normalise with
    ``routing.stats`` (per-sample weights over the window's statistics rows)
    and call ``routing.mask(x, group)`` after each activation, which zeroes
    the channels beyond each image's width.

    Args:
        window (Sequence[SubnetSpec]): The routing window, narrowest first.
        weights (torch.Tensor): ``[B, len(window)]`` routing weights, one-hot
            (possibly straight-through) per image.
    """

    def __init__(self, window: Sequence[SubnetSpec],
                 weights: torch.Tensor) -> None:
        if weights.dim() != 2 or weights.shape[1] != len(window):
            raise ValueError(f'weights must be [B, {len(window)}], got '
                             f'{tuple(weights.shape)}')
        self.window = list(window)
        self.widest = self.window[-1]
        self.weights = weights
        self._masks: Dict[str, torch.Tensor] = {}

    def __getitem__(self, group: str) -> int:
        return self.widest[group]

    @property
    def stats(self):
        return [s.index for s in self.window], self.weights

    def channel_mask(self, group: str) -> torch.Tensor:
        """``[B, C]``: 1 for the channels each image's sub-network uses."""
        if group not in self._masks:
            width = self.widest[group]
            table = torch.zeros(len(self.window), width,
                                dtype=self.weights.dtype,
                                device=self.weights.device)
            for k, spec in enumerate(self.window):
                table[k, :spec[group]] = 1
            self._masks[group] = self.weights @ table
        return self._masks[group]

    def choice_weights(self, group: str) -> Tuple[List[int], torch.Tensor]:
        """The values a choice group (a kernel size) takes in the window,
        ascending, and ``[B, n]``: which one each image's sub-network uses."""
        values = sorted({s[group] for s in self.window})
        table = torch.zeros(len(self.window), len(values),
                            dtype=self.weights.dtype,
                            device=self.weights.device)
        for k, spec in enumerate(self.window):
            table[k, values.index(spec[group])] = 1
        return values, self.weights @ table

    def mask(self, x: torch.Tensor, group: str) -> torch.Tensor:
        m = self.channel_mask(group)[:, :x.shape[1]]
        return x * m.reshape(*m.shape, *([1] * (x.dim() - 2)))


def route_weights(logits: torch.Tensor, training: bool,
                  tau: float = 1.0) -> torch.Tensor:
    """One-hot routing weights from gate logits.

    In training, a straight-through Gumbel-softmax sample (hard one-hot
    forward, soft gradient) so the task loss reaches the gate; in eval, the
    plain argmax, without noise, so routing is deterministic.
    """
    if training:
        return F.gumbel_softmax(logits, tau=tau, hard=True)
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
