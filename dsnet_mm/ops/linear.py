# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Prefix-sliced fully connected layer."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import check_width
from .weight_cache import InferenceCache


class DSLinear(InferenceCache):
    """A linear layer that runs on a dense prefix of its stored weight.

    The input width is read from the input; the output width is an explicit
    argument (default: all stored outputs, as for a classifier whose classes
    never change). ``weight[:out, :in]`` is a view in training (no copy per
    forward) and a cached contiguous copy in cached inference (see
    :class:`~dsnet_mm.ops.weight_cache.InferenceCache`).

    Args:
        in_features (int): Widest input width.
        out_features (int): Widest output width.
        bias (bool): Whether to add a bias. Defaults to True.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init scaled by the output width, as the reference code."""
        bound = 1.0 / math.sqrt(self.out_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self,
                x: torch.Tensor,
                out_features: Optional[int] = None) -> torch.Tensor:
        if self.inference():
            key = (x.shape[-1], out_features)
            weight, bias = self.hit(key) or self.cached(
                key, lambda: self.sliced(*key, copy=True))
        else:
            weight, bias = self.sliced(x.shape[-1], out_features)
        return F.linear(x, weight, bias)

    def sliced(self, c_in: int, out_features: Optional[int],
               copy: bool = False) -> Tuple:
        """(weight, bias) at ``c_in`` inputs and ``out_features`` outputs:
        views, or with ``copy`` detached and contiguous (the cached
        form)."""
        check_width('in_features', c_in, self.in_features)
        c_out = self.out_features if out_features is None else out_features
        check_width('out_features', c_out, self.out_features)
        weight = self.weight[:c_out, :c_in]
        bias = None if self.bias is None else self.bias[:c_out]
        if copy:
            weight = weight.detach().contiguous()
            bias = None if bias is None else bias.detach()
        return weight, bias

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, '
                f'out_features={self.out_features}, '
                f'bias={self.bias is not None}')
