# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Contiguous copies of sliced weights for inference."""
from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn


class SlicedWeight(nn.Module):
    """Base of the sliced ops: hands out ``weight[:a, :b, ...]`` for a forward.

    A prefix slice that cuts the input dimension is not contiguous, and the
    convolution and matmul kernels copy such a weight on every call, so a
    sliced sub-network would pay a weight copy per layer per forward that a
    static network of the same widths does not. In inference (eval mode, or
    no gradient wanted for the weight) the op therefore keeps contiguous
    copies of the slices it ran, in the memory format of the input (NCHW or
    channels-last), for the last ``max_cached`` shapes: a routing window's
    sub-networks stay cached while a batch is bucketed.

    The copies are dropped when the stored weight changes (its version
    counter or storage: an optimizer step, ``load_state_dict``, ``.to()``)
    and when the module enters train mode. In training the slice is a view,
    so gradients reach the stored weight.
    """

    max_cached = 4

    def __init__(self) -> None:
        super().__init__()
        self._slices: 'OrderedDict[Tuple, torch.Tensor]' = OrderedDict()
        self._slices_of: Tuple = ()

    def sliced_weight(self, sizes: Tuple[int, ...],
                      x: torch.Tensor) -> torch.Tensor:
        """``weight`` cut to ``sizes`` (a prefix per leading dimension)."""
        view = self.weight[tuple(slice(s) for s in sizes)]
        if self.training or (torch.is_grad_enabled()
                             and self.weight.requires_grad):
            return view
        fmt = torch.channels_last if view.dim() == 4 and x.dim() == 4 and \
            not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        if view.is_contiguous(memory_format=fmt):
            return view
        source = (self.weight.data_ptr(), self.weight._version)
        if source != self._slices_of:
            self._slices.clear()
            self._slices_of = source
        key = (tuple(view.shape), fmt)
        weight = self._slices.get(key)
        if weight is None:
            weight = view.detach().contiguous(memory_format=fmt)
            self._slices[key] = weight
            if len(self._slices) > self.max_cached:
                self._slices.popitem(last=False)
        else:
            self._slices.move_to_end(key)
        return weight

    def clear_cache(self) -> None:
        self._slices.clear()
        self._slices_of = ()

    def train(self, mode: bool = True) -> 'SlicedWeight':
        if mode:
            self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)
