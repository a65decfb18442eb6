# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Batch norm with shared affine parameters and per-sub-network statistics."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .utils import check_width
from .weight_cache import InferenceCache

# a statistics row, or per-sample weights over rows: (rows, weights [B, n])
StatsSelector = Union[int, Tuple[Sequence[int], torch.Tensor]]


class DSBatchNorm2d(InferenceCache, _BatchNorm):
    """BatchNorm2d for a supernet: shared affine, private running statistics.

    DS-Net shares one ``weight``/``bias`` (sliced to the active width) among all
    sub-networks, but the statistics of a channel depend on every layer before
    it, so each sub-network keeps its own running mean and variance: row ``s``
    of ``running_mean``/``running_var`` (shape ``[num_subnets, C_max]``) is
    sub-network ``s``. The row is chosen by an explicit argument; the width by
    the input. For per-sample routing (the mask path of dynamic inference)
    the argument is ``(rows, weights)``: each sample normalises with
    ``weights[b] @ stats[rows]``, which needs eval mode (running statistics),
    as in Stage II where BN is frozen; a one-hot ``weights`` picks one row per
    sample, and a straight-through one-hot lets gradients reach the gate.
    The module subclasses ``_BatchNorm`` so that mmengine's and
    mmpretrain's norm handling (``norm_eval``, no weight decay on norms,
    frozen stages) treats it as a batch norm.

    Args:
        num_features (int): Widest number of channels.
        num_subnets (int): Number of statistics rows (sub-networks).
        eps (float): Added to the variance. Defaults to 1e-5.
        momentum (float, optional): Running-average momentum; ``None`` keeps a
            cumulative average (used by recalibration). Defaults to 0.1.
    """

    def __init__(self,
                 num_features: int,
                 num_subnets: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1) -> None:
        if num_subnets < 1:
            raise ValueError(f'num_subnets must be >= 1, got {num_subnets}')
        self.num_subnets = num_subnets
        super().__init__(num_features, eps, momentum, affine=True,
                         track_running_stats=True)
        self.running_mean = torch.zeros(num_subnets, num_features)
        self.running_var = torch.ones(num_subnets, num_features)
        self.num_batches_tracked = torch.zeros(num_subnets, dtype=torch.long)
        # whether DSConv2d.forward_bn may fold this BN into the conv in
        # inference (see unfolded_bn)
        self.fold = True

    def _check_input_dim(self, input: torch.Tensor) -> None:
        self._check_dim(input.dim())
        self._check(self.num_features, 0)

    @property
    def sources(self) -> List[torch.Tensor]:
        """The affine parameters and running statistics (not the batch
        counts, which inference never reads)."""
        p, b = self._parameters, self._buffers
        return [p['weight'], p['bias'], b['running_mean'], b['running_var']]

    def reset_subnet_stats(self, row: Optional[int] = None) -> None:
        """Reset the statistics of one sub-network (its ``spec.stats``
        row), or of all of them."""
        rows = slice(None) if row is None else row
        self.running_mean[rows].zero_()
        self.running_var[rows].fill_(1)
        self.num_batches_tracked[rows].zero_()

    def forward(self, x: torch.Tensor, stats: StatsSelector) -> torch.Tensor:
        """``x`` normalised with statistics ``stats``: a row (``spec.stats``)
        or per-sample ``(rows, weights)`` (``MaskedRouting.stats``)."""
        self._check_dim(x.dim())
        if not isinstance(stats, int):
            self._check(x.shape[1], 0)
            return self._per_sample(x, *stats)
        if self.inference():
            key = (x.shape[1], stats)
            mean, var, weight, bias = self.hit(key) or self.cached(
                key, lambda: self.sliced(*key))
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0,
                                self.eps)
        mean, var, weight, bias = self.sliced(x.shape[1], stats)
        factor = 0.0
        if self.training:
            self.num_batches_tracked[stats] += 1
            factor = self.momentum if self.momentum is not None else \
                1.0 / float(self.num_batches_tracked[stats])
        return F.batch_norm(x, mean, var, weight, bias, self.training, factor,
                            self.eps)

    @staticmethod
    def _check_dim(dim: int) -> None:
        if dim != 4:
            raise ValueError(f'expected 4D input (got {dim}D input)')

    def _check(self, c: int, row: int) -> None:
        check_width('num_features', c, self.num_features)
        if not 0 <= row < self.num_subnets:
            raise ValueError(f'stats row {row} is outside 0..'
                             f'{self.num_subnets - 1}')

    def sliced(self, c: int, row: int) -> Tuple[torch.Tensor, ...]:
        """(mean, var, weight, bias): statistics row ``row`` and the affine
        parameters at width ``c`` (views: the cached form too, since
        inference reads them as they are)."""
        self._check(c, row)
        return (self.running_mean[row, :c], self.running_var[row, :c],
                self.weight[:c], self.bias[:c])

    def _per_sample(self, x: torch.Tensor, rows: Sequence[int],
                    weights: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(
                'per-sample statistics need a DSBatchNorm2d in eval mode: '
                'routing per sample uses running statistics (BN is frozen '
                'in Stage II)')
        c = x.shape[1]
        rows = list(rows)
        # an element-wise sum, not a matmul: autocast would run a matmul in
        # bfloat16 or float16 and round the statistics
        dtype = torch.promote_types(weights.dtype, self.running_mean.dtype)
        w = weights.to(dtype)[:, :, None]
        mean = (w * self.running_mean[rows, :c].to(dtype)).sum(1)
        var = (w * self.running_var[rows, :c].to(dtype)).sum(1)
        scale = self.weight[:c] * torch.rsqrt(var + self.eps)
        shift = self.bias[:c] - mean * scale
        return x * scale[:, :, None, None] + shift[:, :, None, None]

    def extra_repr(self) -> str:
        return (f'{self.num_features}, num_subnets={self.num_subnets}, '
                f'eps={self.eps}, momentum={self.momentum}')


@contextmanager
def _set_on_norms(model: nn.Module, attr: str, value) -> Iterator[None]:
    """Within the block, every DSBatchNorm2d of ``model`` has ``attr`` set to
    ``value``; the old values come back afterwards."""
    norms = [m for m in model.modules() if isinstance(m, DSBatchNorm2d)]
    saved = [getattr(m, attr) for m in norms]
    for m in norms:
        setattr(m, attr, value)
    try:
        yield
    finally:
        for m, old in zip(norms, saved):
            setattr(m, attr, old)


def cumulative_bn_stats(model: nn.Module):
    """Within the block, every DSBatchNorm2d keeps a cumulative average.

    Recalibration resets a sub-network's statistics and feeds it batches in
    train mode; a cumulative average (``momentum=None``) weighs every batch
    equally, so the result does not depend on the order of the batches.
    """
    return _set_on_norms(model, 'momentum', None)


@contextmanager
def unfolded_bn(model: nn.Module) -> Iterator[None]:
    """Within the block, no DSBatchNorm2d is folded into its conv, and no
    static network runs in place of the ops
    (:meth:`~dsnet_mm.ops.InferenceCacheBlock.static`).

    Folding (:meth:`DSConv2d.forward_bn`) skips the BN module in inference;
    layer-by-layer tools such as complexity counting need every BN called.
    """
    ops = [m for m in model.modules() if isinstance(m, InferenceCache)]
    _watch(ops, 1)
    try:
        with _set_on_norms(model, 'fold', False):
            yield
    finally:
        _watch(ops, -1)


def _watch(ops: List[InferenceCache], step: int) -> None:
    """Count a layer-by-layer tool in (``step`` 1) or out (-1) on every op
    of ``ops`` and tell the cache blocks holding them."""
    for m in ops:
        m.layerwise += step
    for block in {id(m._block): m._block for m in ops}.values():
        if block is not None:
            block.watch_changed()
