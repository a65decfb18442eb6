# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Multi-view consistency (MvCo), DS-Net++'s Stage I technique for DS-ViT.

Only MvCo's name and role are established (DS-Net++'s abstract: it
stabilises and improves the ViT supernet); what is implemented here are
our three readings (``docs/reference/dsnet_pp.md``, "MvCo"), selected by
``DSImageClassifier(mvco=dict(mode=...))``. With ``V`` augmented views
``x_1..x_V`` of each image (mmpretrain's ``MultiView`` transform), the
batch runs as one tensor of ``V * B`` images, view-major (all first views,
then all second views, ...), and with ``p = softmax(T(x_v))`` the teacher's
probabilities on each view:

- ``'view_mean'`` (option A, the default): every sub-network but the
  largest learns, on every view, from the view average
  ``q = mean_v p(T(x_v))``, so its target depends on the image, not on the
  view's crop or colour;
- ``'cross_view'`` (option B): each of those sub-networks sees one view
  (round-robin over the sandwich members, the cheap form) and learns from
  the mean of the teacher's probabilities on the *other* views;
- ``'largest_consistency'`` (option C): as ``'view_mean'``, and the
  largest's label loss gets ``weight * sym-KL`` between its own predictions
  on the views (averaged over view pairs).

The largest always learns from the labels on every view.
"""
from itertools import combinations

import torch
import torch.nn.functional as F

MVCO_MODES = ('view_mean', 'cross_view', 'largest_consistency')


def _by_view(x: torch.Tensor, num_views: int) -> torch.Tensor:
    """``[V * B, K]`` (view-major) as ``[V, B, K]``."""
    if x.shape[0] % num_views:
        raise ValueError(f'a batch of {x.shape[0]} rows is not {num_views} '
                         'views of the same images')
    return x.reshape(num_views, -1, *x.shape[1:])


def view_mean_target(probs: torch.Tensor, num_views: int) -> torch.Tensor:
    """Option A's target: each image's probabilities averaged over its views,
    given to every view (``[V * B, K]`` in, ``[V * B, K]`` out)."""
    mean = _by_view(probs, num_views).mean(0)
    return mean.repeat(num_views, *[1] * (mean.dim() - 1))


def cross_view_target(probs: torch.Tensor, num_views: int,
                      view: int) -> torch.Tensor:
    """Option B's target for a student that sees ``view``: the mean of the
    probabilities on the other views (``[B, K]``)."""
    if num_views < 2:
        raise ValueError('cross_view needs at least 2 views')
    by_view = _by_view(probs, num_views)
    others = [u for u in range(num_views) if u != view]
    return by_view[others].mean(0)


def views_symmetric_kl(logits: torch.Tensor, num_views: int) -> torch.Tensor:
    """Option C's consistency: ``KL(p_u || p_v) + KL(p_v || p_u)`` between
    the predictions on two views of the same image, averaged over the
    images and the view pairs."""
    logp = _by_view(F.log_softmax(logits.float(), dim=-1), num_views)
    total = logits.new_zeros((), dtype=torch.float32)
    pairs = list(combinations(range(num_views), 2))
    for u, v in pairs:
        diff = logp[u] - logp[v]
        total = total + ((logp[u].exp() - logp[v].exp()) * diff).sum(-1).mean()
    return total / max(len(pairs), 1)
