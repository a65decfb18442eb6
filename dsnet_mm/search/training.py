# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Forward, score and train a classifier at arbitrary widths.

The search visits width vectors that are in no sub-network list, so it runs
the backbone's ``forward_spec`` on an ad-hoc :class:`SubnetSpec`. Scores use
**batch statistics** in every BN (as the paper's search scores its held-out
split with BN in train mode): the running statistics of a width vector that
was never trained would be meaningless, and a recalibration per candidate
would double the cost. The running statistics are left untouched.
"""
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dsnet_mm.models.complexity import count_complexity
from dsnet_mm.models.subnet import SubnetSpec
from .noise import noise_alphas, noisy_scoring

Widths = Mapping[str, int]


def spec_of(model: nn.Module, widths: Widths) -> SubnetSpec:
    """An ad-hoc sub-network of ``model``'s space (statistics row of the
    largest, which the search never reads: it scores on batch statistics)."""
    space = model.backbone.space
    return space.adhoc(widths, space.largest.stats, 'search')


def logits_at(model: nn.Module, inputs: torch.Tensor,
              widths: Widths) -> torch.Tensor:
    """Class logits of the classifier at ``widths``."""
    feats = model.backbone.forward_spec(inputs, spec_of(model, widths))
    if model.with_neck:
        feats = model.neck(feats)
    return model.head(feats)


def madds_at(model: nn.Module, widths: Widths, shape) -> int:
    """MAdds per image of the classifier at ``widths`` on ``shape`` (C, H, W)
    inputs, counted as every report counts them."""
    x = torch.zeros(1, *shape, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        return count_complexity(model, lambda: logits_at(model, x,
                                                        widths))['madds']
    finally:
        model.train(was_training)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except that every BN normalises with the batch's own
    statistics; running statistics and counters are restored after."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
        m.momentum = 0.0  # the update leaves the running statistics as is
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
        model.train(was_training)


@torch.no_grad()
def evaluate_at(model: nn.Module, batches: Iterable[dict],
                widths: Widths,
                noise_seed: Optional[int] = None) -> Dict[str, float]:
    """Top-1 (%) and mean cross-entropy of the classifier at ``widths``;
    with ``noise_seed``, the ranking noise on, drawn from that seed."""
    correct, loss, total = 0, 0.0, 0
    with batch_statistics(model), (
            nullcontext() if noise_seed is None else
            noisy_scoring(model, noise_seed)):
        for data in batches:
            data = model.data_preprocessor(data, False)
            labels = torch.cat(
                [s.gt_label for s in data['data_samples']]).to(
                    data['inputs'].device)
            logits = logits_at(model, data['inputs'], widths)
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction='sum'))
            total += labels.numel()
    if total == 0:
        raise ValueError('the held-out split yielded no images')
    return dict(accuracy=100.0 * correct / total, loss=loss / total)


def sgd(model: nn.Module, lr: float, weight_decay: float = 0.0,
        momentum: float = 0.9) -> torch.optim.SGD:
    """SGD over the backbone and head; weight decay only on conv and linear
    weights (never on BN, biases, depthwise filters or noise scales), as the
    paper's code does."""
    alphas = {id(p) for p in noise_alphas(model)}
    decay, rest = [], []
    for part in (model.backbone, model.head):
        for p in part.parameters():
            if not p.requires_grad:
                continue
            conv_or_fc = p.dim() == 2 or (p.dim() == 4 and p.shape[1] != 1)
            (decay if conv_or_fc and id(p) not in alphas else rest).append(p)
    return torch.optim.SGD([
        dict(params=decay, weight_decay=weight_decay),
        dict(params=rest, weight_decay=0.0)
    ], lr=lr, momentum=momentum, nesterov=momentum > 0)


def train_at(model: nn.Module, widths: Widths, batches: Iterable[dict],
             optimizer: torch.optim.Optimizer, max_iters: int,
             lr_at: Optional[Callable[[int], float]] = None,
             stop: Optional[Callable[[int], bool]] = None) -> int:
    """Train the classifier at ``widths`` with its head's loss.

    Args:
        model (nn.Module): The classifier.
        widths (Mapping[str, int]): The width vector trained.
        batches (Iterable[dict]): Training batches (cycled over by the
            caller as needed; training ends when they do).
        optimizer (Optimizer): Built over the model, e.g. by :func:`sgd`.
        max_iters (int): At most this many steps.
        lr_at (Callable, optional): Learning rate of step ``i``.
        stop (Callable, optional): Called after step ``i`` (counted from 1);
            training ends when it returns True.

    Returns:
        int: The number of steps taken.
    """
    model.train()
    done = 0
    for data in batches:
        if done >= max_iters:
            break
        if lr_at is not None:
            for group in optimizer.param_groups:
                group['lr'] = lr_at(done)
        data = model.data_preprocessor(data, True)
        feats = model.backbone.forward_spec(data['inputs'],
                                            spec_of(model, widths))
        if model.with_neck:
            feats = model.neck(feats)
        loss = model.head.loss(feats, data['data_samples'])['loss']
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f'loss is {loss.item()} at step {done} of training at '
                f'{dict(widths)}; lower the learning rate')
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += 1
        if stop is not None and stop(done):
            break
    return done

