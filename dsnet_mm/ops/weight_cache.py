# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced arguments of an op, cached for inference."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Sequence, Tuple, TypeVar

import torch
import torch.nn as nn

T = TypeVar('T')


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format the conv kernels see in a 4-D input: channels-last
    when its strides are (by the stride test, which also decides tensors
    whose sizes fit both formats, e.g. pooled ``[N, C, 1, 1]``), else NCHW.
    """
    if x.dim() == 4:
        c, w = x.shape[1], x.shape[3]
        _, sc, sh, sw = x.stride()
        if c > 1 and sc == 1 and sw == c and sh == w * c:
            return torch.channels_last
    return torch.contiguous_format


class InferenceCache(nn.Module):
    """Base of the sliced ops: keeps the sliced arguments of recent calls.

    Slicing costs twice at inference. A prefix slice that cuts the input
    dimension of a weight is not contiguous, and the convolution and matmul
    kernels copy such a weight on every call; and building the views and
    checking the widths costs Python time that a static layer does not pay,
    which dominates at batch size 1. Within :func:`inference_cache`, an op in
    eval mode (and with no gradient wanted for its weight) therefore builds
    its arguments once per call signature (input width, output width or
    statistics row, memory format), with weights made contiguous in the
    input's memory format and BN folded into the conv before it
    (:meth:`DSConv2d.forward_bn`), and reuses them for the last
    ``max_cached`` signatures: a routing window's sub-networks stay cached
    while a batch is bucketed.

    An entry is rebuilt when a source tensor's version counter or the
    weight's storage has changed since it was built (an optimizer step,
    ``load_state_dict``, ``.to()``). Writes through ``.data`` bypass version
    counters (mmengine's EMA updates and swaps weights that way), which is
    why caching is opt-in: outside :func:`inference_cache` every call slices
    afresh, and in training the slices are views, so gradients reach the
    stored tensors.
    """

    max_cached = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: 'OrderedDict[Hashable, Tuple]' = OrderedDict()
        self.caching = False

    def inference(self) -> bool:
        """Whether this call may use the cache: caching on, eval mode, and no
        gradient wanted for the weight."""
        return self.caching and not self.training and not (
            torch.is_grad_enabled()
            and self._parameters['weight'].requires_grad)

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


@contextmanager
def inference_cache(model: nn.Module) -> Iterator[None]:
    """Within the block, the sliced ops of ``model`` cache their inference
    arguments (see :class:`InferenceCache`); the caches start and end empty.

    Change weights inside the block only through in-place tensor operations
    (optimizer steps, ``load_state_dict``), not through ``.data``.
    """
    ops = [m for m in model.modules() if isinstance(m, InferenceCache)]
    for m in ops:
        m.clear_cache()
        m.caching = True
    try:
        yield
    finally:
        for m in ops:
            m.caching = False
            m.clear_cache()
