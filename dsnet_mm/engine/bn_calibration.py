# Copyright (c) dsnet_mm contributors. All rights reserved.
"""BN recalibration: fresh running statistics for one sub-network.

Recalibration is defined by one process: the first ``num_batches`` batches
of the training dataloader in :class:`~mmengine.dataset.DefaultSampler`'s
one-process order, each batch's statistics (mean, unbiased variance)
averaged with equal weights. Under distribution every rank reads those same
batches (:func:`build_calibration_dataloader`), so that their images and
augmentation draws are one process's, runs its share of them, and the
ranks' sums are all-reduced (:func:`calibrate_bn`): N ranks end with the
statistics of one process.
"""
import copy
from typing import Iterable, List, Optional

import torch
import torch.nn as nn
from mmengine.dataset import DefaultSampler, worker_init_fn
from mmengine.dist import all_reduce, get_dist_info
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d, cumulative_bn_stats


class CalibrationSampler(DefaultSampler):
    """``DefaultSampler``'s one-process order, on every rank.

    A ``DefaultSampler`` gives each rank its own shard; recalibration needs
    every rank to see the batches one process would (see
    :func:`calibrate_bn`). The permutation is ``DefaultSampler``'s (same
    ``seed``, epoch 0), unsharded.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Shuffle the dataset. Defaults to True.
        seed (int, optional): Shuffling seed, the same on every rank; None
            draws one and shares it across ranks. Defaults to None.
    """

    def __init__(self, dataset, shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=False)
        self.rank, self.world_size = 0, 1
        self.num_samples = self.total_size = len(dataset)


def build_calibration_dataloader(dataloader_cfg: dict,
                                 seed: Optional[int] = None) -> DataLoader:
    """The dataloader of a training dataloader config, as one process
    iterates it, on every rank.

    The sampler becomes :class:`CalibrationSampler` (keeping ``shuffle``), and
    with a ``seed`` the workers are seeded as rank 0's (mmengine seeds worker
    ``w`` of rank ``r`` with ``seed + num_workers * r + w``, which would give
    every rank other augmentation draws); a config's own ``worker_init_fn`` is
    kept.

    Args:
        dataloader_cfg (dict): A dataloader config (the training one).
        seed (int, optional): The run's random seed. Defaults to None.
    """
    cfg = copy.deepcopy(dataloader_cfg)
    sampler = cfg.get('sampler') or {}
    cfg['sampler'] = dict(
        type=CalibrationSampler, shuffle=sampler.get('shuffle', True))
    if seed is not None and 'worker_init_fn' not in cfg:
        cfg['worker_init_fn'] = dict(
            type=worker_init_fn,
            num_workers=cfg.get('num_workers', 0),
            rank=0,
            seed=seed,
            disable_subprocess_warning=cfg.pop('disable_subprocess_warning',
                                               False))
    return Runner.build_dataloader(cfg, seed=seed)


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[dict], spec: SubnetSpec,
                 num_batches: int) -> int:
    """Recompute the BN statistics row of ``spec`` from training batches.

    The row is reset, then the first ``num_batches`` batches run through the
    backbone (and neck) in train mode with a cumulative average, without
    gradients: the row becomes the mean of the batches' statistics. The BN
    layers run in train mode even where the model freezes them (a Stage II
    classifier, ``norm_eval``); the other rows are untouched, and the model's
    mode is restored afterwards.

    Under distribution every rank must be given the same batches (see
    :func:`build_calibration_dataloader`): rank ``r`` of ``N`` runs batches
    ``r, r + N, ...``, then each statistic times its rank's batch count is
    summed over the ranks in float64 with the counts, so every rank ends with
    the mean over all the batches, as one process computes it. The two agree
    to float32 rounding (one process averages cumulatively in another order:
    a relative difference of about 1e-6).

    Args:
        model (nn.Module): An mmpretrain classifier with a DS backbone.
        batches (Iterable[dict]): Data batches (as a dataloader yields them).
        spec (SubnetSpec): The sub-network to recalibrate.
        num_batches (int): Batches to use (fewer if the iterable ends).

    Returns:
        int: The number of batches used, over all ranks.
    """
    if num_batches < 1:
        raise ValueError(f'num_batches must be >= 1, got {num_batches}')
    rank, world_size = get_dist_info()
    norms = [m for m in model.backbone.modules()
             if isinstance(m, DSBatchNorm2d)]
    for m in norms:
        m.reset_subnet_stats(spec.stats)
    was_training = model.training
    model.train()
    # a frozen model (Stage II, ``norm_eval``) keeps its BN in eval mode
    for m in norms:
        m.train()
    used = 0
    try:
        with cumulative_bn_stats(model.backbone), \
                model.backbone.subnet(spec):
            for data in batches:
                if used % world_size == rank:
                    inputs = model.data_preprocessor(data, False)['inputs']
                    model.extract_feat(inputs)
                used += 1
                if used >= num_batches:
                    break
    finally:
        model.train(was_training)
    if world_size > 1:
        _average_over_ranks(norms, spec.stats)
    return used


def _average_over_ranks(norms: List[DSBatchNorm2d], row: int) -> None:
    """Make statistics row ``row`` of every norm the batch-weighted mean of
    the ranks' rows (each rank's row is the mean over its own batches, its
    ``num_batches_tracked`` their number)."""
    counts = torch.stack([m.num_batches_tracked[row] for m in norms]).double()
    sums = torch.cat([
        torch.cat([m.running_mean[row], m.running_var[row]]).double() * n
        for m, n in zip(norms, counts)
    ])
    all_reduce(counts)
    all_reduce(sums)
    offset = 0
    for m, n in zip(norms, counts.tolist()):
        c = m.num_features
        if n > 0:
            mean, var = (sums[offset:offset + 2 * c] / n).split(c)
            m.running_mean[row] = mean.to(m.running_mean.dtype)
            m.running_var[row] = var.to(m.running_var.dtype)
        m.num_batches_tracked[row] = int(n)
        offset += 2 * c
