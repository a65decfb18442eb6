# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced arguments of an op, cached for inference."""
from collections import OrderedDict
from typing import Callable, Hashable, Sequence, Tuple, TypeVar

import torch
import torch.nn as nn

T = TypeVar('T')


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for a 4-D input stored so, else contiguous (NCHW)."""
    if x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class InferenceCache(nn.Module):
    """Base of the sliced ops: keeps the sliced arguments of recent calls.

    Slicing costs twice at inference. A prefix slice that cuts the input
    dimension of a weight is not contiguous, and the convolution and matmul
    kernels copy such a weight on every call; and building the views and
    checking the widths costs Python time that a static layer does not pay,
    which dominates at batch size 1. In inference (eval mode, no gradient
    wanted for the parameters) an op therefore builds its arguments once per
    call signature (input width, output width or statistics row, memory
    format), with weights made contiguous in the input's memory format, and
    reuses them for the last ``max_cached`` signatures: a routing window's
    sub-networks stay cached while a batch is bucketed.

    An entry is rebuilt when a source tensor has changed since it was built
    (its version counter or storage: an optimizer or EMA step,
    ``load_state_dict``, ``.to()``); all are dropped when the module enters
    train mode and on ``_apply``. In
    training nothing is cached: the slices are views, so gradients reach
    the stored tensors.
    """

    max_cached = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: 'OrderedDict[Hashable, Tuple]' = OrderedDict()

    def inference(self) -> bool:
        """Whether this call may use the cache: eval mode, and no gradient
        wanted for the weight."""
        return not self.training and not (torch.is_grad_enabled()
                                          and self.weight.requires_grad)

    def cached(self, key: Hashable, sources: Sequence[torch.Tensor],
               build: Callable[[], T]) -> T:
        """``build()`` for ``key``, reused while ``sources`` are unchanged."""
        # version counters catch in-place updates; the first source's
        # storage catches a move (``.to()`` also clears via ``_apply``)
        stamp = (sources[0].data_ptr(), *[t._version for t in sources])
        hit = self._cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, build())
            self._cache[key] = hit
            if len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit[1]

    def clear_cache(self) -> None:
        self._cache.clear()

    def train(self, mode: bool = True) -> 'InferenceCache':
        if mode:
            self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)
