# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced arguments of an op, cached for inference."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import (Callable, Hashable, Iterator, List, Optional, Sequence,
                    Tuple, TypeVar)

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


def _stamp(ops: Sequence['InferenceCache']) -> List[Tuple[int, int]]:
    """Storage and version counter of every tensor the ``ops`` read: version
    counters catch in-place updates, the storage a replaced tensor."""
    return [(t.data_ptr(), t._version) for m in ops for t in m.sources]


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

    An entry is rebuilt when a tensor it was built from has changed (its
    version counter or storage: an optimizer step, ``load_state_dict``,
    ``.to()``). Checking that costs Python time on every call, so inside a
    call of the model given to :func:`inference_cache` (or a
    :meth:`InferenceCacheBlock.checked` span) every op's tensors are checked
    once, at the start, and the ops then return their entries unchecked.
    Writes through ``.data`` bypass version counters (mmengine's EMA updates
    and swaps weights that way), which is why caching is opt-in: outside
    :func:`inference_cache` every call slices afresh, and in training the
    slices are views, so gradients reach the stored tensors.
    """

    max_cached = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: 'OrderedDict[Hashable, Tuple]' = OrderedDict()
        self.caching = False
        # set by InferenceCacheBlock for the length of a checked span in
        # which this op caches: entries need no check of their own
        self._checked = False

    @property
    def sources(self) -> List[torch.Tensor]:
        """The stored tensors the op's sliced arguments are built from."""
        # _parameters/_buffers directly: skips nn.Module.__getattr__
        return [t for t in (*self._parameters.values(),
                            *self._buffers.values()) if t is not None]

    def inference(self) -> bool:
        """Whether this call may use the cache: caching on, eval mode, and no
        gradient wanted for the weight."""
        return self._checked or self.caching and not self.training and not (
            torch.is_grad_enabled()
            and self._parameters['weight'].requires_grad)

    def hit(self, key: Hashable) -> Optional[Tuple]:
        """The entry for ``key`` if a checked span vouches for it, else None
        (the fast path of :meth:`cached`: one dict lookup; the span checked
        every op of its block, also a BN folded into this conv)."""
        if self._checked:
            hit = self._cache.get(key)
            if hit is not None:
                return hit[1]
        return None

    def cached(self, key: Hashable, build: Callable[[], T],
               *others: 'InferenceCache') -> T:
        """``build()`` for ``key``, reused while the tensors of this op and of
        ``others`` (e.g. a BN folded into a conv) are unchanged."""
        hit = self._cache.get(key)
        stamp = _stamp((self, *others))
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


class InferenceCacheBlock:
    """The caching ops of one :func:`inference_cache` block.

    A checked span (:meth:`checked`, or a call of the block's model) checks
    the version counters of every op's tensors once at its start, drops
    every entry when any of them changed since the last span, and lets the
    ops that cache return their entries without checks of their own until
    it ends (:meth:`InferenceCache.hit`): at batch size 1 those checks cost
    more Python time than the whole span's. Weights must not change within
    a span, and a parameter replaced by assignment inside the block is not
    seen by spans (``.to()`` and ``load_state_dict`` are).
    """

    def __init__(self, ops: Sequence[InferenceCache]) -> None:
        self.ops = list(ops)
        self._tensors = [t for m in self.ops for t in m.sources]
        self._depth = 0
        self._stamp = None

    def enter(self, *args) -> None:
        """Open a span (spans nest; the outermost one checks)."""
        self._depth += 1
        if self._depth > 1:
            return
        stamp = [t._version for t in self._tensors]
        if stamp != self._stamp:
            for m in self.ops:
                m.clear_cache()
            self._stamp = stamp
        for m in self.ops:
            # through __dict__: nn.Module.__setattr__ costs microseconds
            m.__dict__['_checked'] = False
            m.__dict__['_checked'] = m.inference()

    def exit(self, *args) -> None:
        """Close a span."""
        self._depth -= 1
        if self._depth == 0:
            for m in self.ops:
                m.__dict__['_checked'] = False

    @contextmanager
    def checked(self) -> Iterator[None]:
        """A checked span around calls that are not calls of the model, e.g.
        ``forward_dynamic``."""
        self.enter()
        try:
            yield
        finally:
            self.exit()


@contextmanager
def inference_cache(model: nn.Module) -> Iterator[InferenceCacheBlock]:
    """Within the block, the sliced ops of ``model`` cache their inference
    arguments (see :class:`InferenceCache`); the caches start and end empty.

    Every call of ``model`` is a checked span (see
    :class:`InferenceCacheBlock`); the block's object opens spans around
    other calls. Change weights inside the block only through in-place
    tensor operations (optimizer steps, ``load_state_dict``), not through
    ``.data``, and not during a span.
    """
    ops = [m for m in model.modules() if isinstance(m, InferenceCache)]
    block = InferenceCacheBlock(ops)
    hooks = [model.register_forward_pre_hook(block.enter),
             model.register_forward_hook(block.exit, always_call=True)]
    for m in ops:
        m.clear_cache()
        m.caching = True
    try:
        yield block
    finally:
        for h in hooks:
            h.remove()
        for m in ops:
            m.caching = False
            m._checked = False
            m.clear_cache()
