# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced arguments of an op, and static networks built from them, cached for
inference."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import (Any, Callable, Hashable, Iterator, List, Optional,
                    Sequence, Tuple, TypeVar)

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


def _may_cache(state: dict, grad: bool) -> bool:
    """Whether an op (its ``__dict__``) may use its cache: caching on, eval
    mode, and no gradient wanted for its weight (``grad``: whether
    gradients are enabled; the weight is looked up only then, and only in
    an op that caches)."""
    return state['caching'] and not state['training'] and not (
        grad and state['_parameters']['weight'].requires_grad)


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
        # the InferenceCacheBlock caching this op: within its checked
        # spans entries need no check of their own; the op tells it of
        # every move, conversion and train/eval switch
        self._block: Optional['InferenceCacheBlock'] = None
        # above 0 while a layer-by-layer tool watches the op (unfolded_bn):
        # no static network may run in its place
        self.layerwise = 0

    @property
    def sources(self) -> List[torch.Tensor]:
        """The stored tensors the op's sliced arguments are built from."""
        # _parameters/_buffers directly: skips nn.Module.__getattr__
        return [t for t in (*self._parameters.values(),
                            *self._buffers.values()) if t is not None]

    def inference(self) -> bool:
        """Whether this call may use the cache: caching on, eval mode, and no
        gradient wanted for the weight."""
        return _may_cache(self.__dict__, torch.is_grad_enabled())

    def hit(self, key: Hashable) -> Optional[Tuple]:
        """The entry for ``key`` if a checked span vouches for it, else None
        (the fast path of :meth:`cached` where :meth:`inference` allows the
        cache: one dict lookup; the span checked every op of its block, also
        a BN folded into this conv)."""
        block = self._block
        if block is not None and block._depth:
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
        if self._block is not None:
            self._block.mode_changed()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        block = self._block
        if block is not None and block._depth:
            raise RuntimeError(
                f'{type(self).__name__} was moved or converted (.to(), '
                '.half(), ...) during a call of the model inside '
                'inference_cache, whose entries that call already vouched '
                'for: move the model between calls (the cache then rebuilds '
                'from the moved tensors) or outside the block')
        self.clear_cache()
        if block is not None:
            block.moved()
        return super()._apply(fn, *args, **kwargs)


class InferenceCacheBlock:
    """The caching ops of one :func:`inference_cache` block, and the static
    networks built from them.

    A checked span (:meth:`checked`, or a call of the block's model) checks
    the version counters of every op's tensors once at its start, drops
    every entry when any of them changed since the last span (or an op was
    moved or converted), and lets the ops that cache return their entries
    without checks of their own until it ends (:meth:`InferenceCache.hit`):
    at batch size 1 those checks cost more Python time than the whole
    span's. Weights must not change within a span, and a parameter replaced
    by assignment inside the block is not seen by spans (``.to()`` and
    ``load_state_dict`` are). Opening and closing a span costs one pass over
    the tensors' version counters (a few hundred tensors for
    DS-MobileNetV1, a small share of a batch-1 forward); nothing else is
    read per op.

    Even with every op's arguments cached, a forward through the DS module
    structure costs Python time a static network does not (a noticeable
    share of a batch-1 forward of DS-MobileNetV1 at 224). Within a
    span the model may therefore run a static network in place of its ops
    (:meth:`static`), e.g. a sub-network as the static network built from
    the same folded weights; the block keeps the last ``max_static`` of them
    (a routing window's sub-networks) and drops them with the ops' entries.

    The ops report to their block (they hold it while it caches them):
    a move or conversion (``.to()``, ``.half()``) makes the next span drop
    every entry and re-read the tensors, which ``.to()`` may have replaced
    (:meth:`moved`); a train/eval switch makes it look at the ops' modes
    again (:meth:`mode_changed`).

    Args:
        model (nn.Module): The model whose ops these are: what the static
            networks are built from (see
            :func:`~dsnet_mm.static.cached.cached_static`).
        ops (Sequence[InferenceCache]): The caching ops of the model.
        max_static (int): Plain modules kept. Defaults to
            :attr:`InferenceCache.max_cached`.
        compile (bool): Whether spans get the ``torch.compile``d forms of
            the static networks (inductor; each compiles on its first call).
            An attribute that may change between spans. Defaults to False.
    """

    def __init__(self,
                 model: nn.Module,
                 ops: Sequence[InferenceCache],
                 max_static: int = InferenceCache.max_cached,
                 compile: bool = False) -> None:
        self.model = model
        self.ops = list(ops)
        self.max_static = max_static
        self.compile = compile
        # the tensors the ops read, None after a move: re-read at the next
        # span
        self._tensors: Optional[List[torch.Tensor]] = None
        self._static: 'OrderedDict[Hashable, Any]' = OrderedDict()
        self._static_ok = False
        self._depth = 0
        self._stamp = None
        # whether every op is in eval mode, None after a train/eval switch
        self._eval: Optional[bool] = None
        # whether a layer-by-layer tool watches an op, None after one
        # started or stopped watching
        self._watched: Optional[bool] = None

    def moved(self) -> None:
        """An op was moved or converted: its tensors may be new ones."""
        self._tensors = None

    def mode_changed(self) -> None:
        """An op switched between train and eval mode."""
        self._eval = None

    def watch_changed(self) -> None:
        """A layer-by-layer tool started or stopped watching the ops (see
        :func:`~dsnet_mm.ops.unfolded_bn`); from a start on no static network
        runs in their place, for the rest of an open span too."""
        self._watched = None
        self._static_ok = False

    def enter(self, *args) -> None:
        """Open a span (spans nest; the outermost one checks)."""
        self._depth += 1
        if self._depth > 1:
            return
        if self._tensors is None:
            self._tensors = [t for m in self.ops for t in m.sources]
            self._stamp = None
        stamp = [t._version for t in self._tensors]
        if stamp != self._stamp:
            for m in self.ops:
                m.clear_cache()
            self._static.clear()
            self._stamp = stamp
        self._static_ok = self._static_allowed()

    def _static_allowed(self) -> bool:
        """Whether static networks may run in the ops' place: no op watched
        layer by layer, and every op may cache
        (:meth:`InferenceCache.inference`; without gradients, whether every
        op is in eval mode, looked at again only after a train/eval
        switch)."""
        if self._watched is None:
            self._watched = any(m.layerwise for m in self.ops)
        if self._watched:
            return False
        if torch.is_grad_enabled():
            return bool(self.ops) and all(
                m.inference() for m in self.ops)
        if self._eval is None:
            self._eval = bool(self.ops) and all(
                _may_cache(m.__dict__, False) for m in self.ops)
        return self._eval

    def exit(self, *args) -> None:
        """Close a span."""
        self._depth -= 1
        if self._depth == 0:
            self._static_ok = False

    @property
    def in_span(self) -> bool:
        """Whether a checked span is open."""
        return self._depth > 0

    @contextmanager
    def checked(self) -> Iterator[None]:
        """A checked span around calls that are not calls of the model, e.g.
        ``forward_dynamic``."""
        self.enter()
        try:
            yield
        finally:
            self.exit()

    def static(self, key: Hashable, build: Callable[[], T]) -> Optional[T]:
        """The static network (or any object holding some) that ``build()``
        makes for ``key``, built once and kept while the ops' tensors are
        unchanged; None where the ops must run themselves: outside a span,
        when an op may not cache (training, gradients wanted) and while a
        layer-by-layer tool watches them (:func:`~dsnet_mm.ops.unfolded_bn`:
        complexity counting)."""
        if not self._static_ok:
            return None
        entry = self._static.get(key)
        if entry is None:
            entry = build()
            self._static[key] = entry
            if len(self._static) > self.max_static:
                self._static.popitem(last=False)
        else:
            self._static.move_to_end(key)
        return entry


class InferenceCacheUser:
    """Mixin of a module that runs something other than its ops within
    :func:`inference_cache` (a DS backbone runs a sub-network as its static
    network): the block gives itself to the users among the model's modules
    on entry (:meth:`attach_inference_cache`) and takes itself back on
    exit; :attr:`inference_block` is the block while it is open, else None.
    """

    inference_block: Optional['InferenceCacheBlock'] = None

    def attach_inference_cache(
            self, block: Optional['InferenceCacheBlock']) -> None:
        """Called by :func:`inference_cache` with its block on entry and
        with None on exit; a user may decline a block (keep None)."""
        self.inference_block = block


@contextmanager
def inference_cache(model: nn.Module,
                    compile: bool = False) -> Iterator[InferenceCacheBlock]:
    """Within the block, the sliced ops of ``model`` cache their inference
    arguments (see :class:`InferenceCache`), and a DS classifier runs its
    sub-networks as static networks built once from them (see
    :meth:`InferenceCacheBlock.static`); the caches start and end empty.

    Every call of ``model`` is a checked span (see
    :class:`InferenceCacheBlock`); the block's object opens spans around
    other calls. Change weights inside the block only through in-place
    tensor operations (optimizer steps, ``load_state_dict``), not through
    ``.data``, and not during a span.

    Every :class:`InferenceCacheUser` among the modules of ``model`` gets
    the block on entry and None on exit (a DS backbone builds its static
    networks through it, see
    :meth:`~dsnet_mm.models.backbones.ds_backbone.DSBackboneMixin.
    cached_static`). The block keeps as many static networks as the model's
    routing window (``model.window``) has members, at least
    :attr:`InferenceCache.max_cached`.

    Args:
        model (nn.Module): The model.
        compile (bool): Run the static networks ``torch.compile``d (see
            :class:`InferenceCacheBlock`). Defaults to False.
    """
    ops = [m for m in model.modules() if isinstance(m, InferenceCache)]
    window = len(getattr(model, 'window', ()))
    block = InferenceCacheBlock(model, ops,
                                max(InferenceCache.max_cached, window),
                                compile)
    users = [m for m in model.modules() if isinstance(m, InferenceCacheUser)]
    hooks = [model.register_forward_pre_hook(block.enter),
             model.register_forward_hook(block.exit, always_call=True)]
    for m in ops:
        m.clear_cache()
        m.caching = True
        m._block = block
    for m in users:
        m.attach_inference_cache(block)
    try:
        yield block
    finally:
        for h in hooks:
            h.remove()
        for m in users:
            m.attach_inference_cache(None)
        for m in ops:
            m.caching = False
            m._block = None
            m.clear_cache()
