# Copyright (c) dsnet_mm contributors. All rights reserved.
"""BN recalibration: fresh running statistics for one sub-network."""
from typing import Iterable

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d, cumulative_bn_stats


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[dict], spec: SubnetSpec,
                 num_batches: int) -> int:
    """Recompute the BN statistics row of ``spec`` from training batches.

    The row is reset, then ``num_batches`` batches run through the backbone
    (and neck) in train mode with a cumulative average, without gradients;
    the other rows are untouched. The model's mode is restored afterwards.

    Args:
        model (nn.Module): An mmpretrain classifier with a DS backbone.
        batches (Iterable[dict]): Data batches (as a dataloader yields them).
        spec (SubnetSpec): The sub-network to recalibrate.
        num_batches (int): Batches to use (fewer if the iterable ends).

    Returns:
        int: The number of batches used.
    """
    if num_batches < 1:
        raise ValueError(f'num_batches must be >= 1, got {num_batches}')
    norms = [m for m in model.backbone.modules()
             if isinstance(m, DSBatchNorm2d)]
    for m in norms:
        m.reset_subnet_stats(spec.index)
    was_training = model.training
    model.train()
    used = 0
    try:
        with cumulative_bn_stats(model.backbone), \
                model.backbone.subnet(spec):
            for data in batches:
                inputs = model.data_preprocessor(data, False)['inputs']
                model.extract_feat(inputs)
                used += 1
                if used >= num_batches:
                    break
    finally:
        model.train(was_training)
    return used
