# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-sample routing over a window of sub-networks.

The gate picks, for each image, one sub-network of its routing window. Three
ways run that choice (all give the same predictions):

- slice: each image alone, every layer sliced to its sub-network;
- bucket: the batch split by chosen sub-network, each group run sliced and
  the outputs put back in order (batched speed-up);
- mask: the window's widest sub-network with every channel beyond an image's
  width multiplied by zero, via :class:`MaskedRouting` (differentiable with
  respect to the straight-through one-hot, for gate training).
"""
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from dsnet_mm.ops.utils import check_choice
from .subnet import SubnetSpec

MASK_POSITIONS = ('after_act', 'before_act')


class MaskedRouting:
    """A spec-like object: widest widths, per-sample masks and BN statistics.

    Layers read ``routing[group]`` (the window's widest width), normalise with
    ``routing.stats`` (per-sample weights over the window's statistics rows)
    and zero the channels beyond each image's width at one of two places
    (``mask_position``):

    - ``'after_act'``: ``routing.mask(x, group)`` after each activation (or
      residual add), once per layer;
    - ``'before_act'`` (the reference DS-Net code's placement): on the
      conv's output and again on the BN's output, before the activation
      (``conv.forward_bn(..., mask=routing.pre_act_mask(group))``), and
      ``routing.mask`` leaves the activation's output as it is.

    Both give the same outputs (the activations map 0 to 0), but not the
    same gradient with respect to the routing weights, i.e. the gradient
    that reaches the gate from the task loss. With the mask ``M`` (1 for
    the channels an image keeps) after the activation ``a``, a channel's
    ``dL/dM`` is ``g * a(bn(z))``: what the channel would have added, for a
    channel the image drops too. Before it (``a(M * bn(M * z))``) it is
    ``g * a'(bn(z)) * (bn(z) + gamma / sigma * z)`` for a kept channel and
    ``g * a'(0) * bn(0)`` for a dropped one (``bn(0) = beta - gamma * mean
    / sigma``), which does not depend on the channel's input. The path
    through the per-sample BN statistics is the same in both.

    Args:
        window (Sequence[SubnetSpec]): The routing window, narrowest first.
        weights (torch.Tensor): ``[B, len(window)]`` routing weights, one-hot
            (possibly straight-through) per image.
        mask_position (str): ``'after_act'`` or ``'before_act'``. Defaults
            to ``'after_act'``.
    """

    def __init__(self, window: Sequence[SubnetSpec],
                 weights: torch.Tensor,
                 mask_position: str = 'after_act') -> None:
        if weights.dim() != 2 or weights.shape[1] != len(window):
            raise ValueError(f'weights must be [B, {len(window)}], got '
                             f'{tuple(weights.shape)}')
        check_choice('mask_position', mask_position, MASK_POSITIONS)
        self.window = list(window)
        self.widest = self.window[-1]
        self.weights = weights
        self.mask_position = mask_position
        self._masks: Dict[str, torch.Tensor] = {}

    def __getitem__(self, group: str) -> int:
        return self.widest[group]

    @property
    def stats(self):
        return [s.stats for s in self.window], self.weights

    def channel_mask(self, group: str) -> torch.Tensor:
        """``[B, C]``: 1 for the channels each image's sub-network uses."""
        if group not in self._masks:
            width = self.widest[group]
            table = torch.zeros(len(self.window), width,
                                dtype=self.weights.dtype,
                                device=self.weights.device)
            for k, spec in enumerate(self.window):
                table[k, :spec[group]] = 1
            self._masks[group] = self.weights @ table
        return self._masks[group]

    def choice_weights(self, group: str) -> Tuple[List[int], torch.Tensor]:
        """The values a choice group (a kernel size) takes in the window,
        ascending, and ``[B, n]``: which one each image's sub-network uses."""
        values = sorted({s[group] for s in self.window})
        table = torch.zeros(len(self.window), len(values),
                            dtype=self.weights.dtype,
                            device=self.weights.device)
        for k, spec in enumerate(self.window):
            table[k, values.index(spec[group])] = 1
        return values, self.weights @ table

    def apply_mask(self, x: torch.Tensor, group: str) -> torch.Tensor:
        """``x`` (``[B, C, ...]``) with the channels beyond each image's
        width of ``group`` zeroed."""
        m = self.channel_mask(group)[:, :x.shape[1]]
        return x * m.reshape(*m.shape, *([1] * (x.dim() - 2)))

    def mask(self, x: torch.Tensor, group: str) -> torch.Tensor:
        """The mask after an activation: :meth:`apply_mask` with
        ``mask_position='after_act'``, else ``x`` itself (masked before
        the activation already)."""
        if self.mask_position == 'before_act':
            return x
        return self.apply_mask(x, group)

    def pre_act_mask(self, group: str
                     ) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """What ``DSConv2d.forward_bn`` applies to the conv's and the BN's
        outputs: :meth:`apply_mask` for ``group`` with
        ``mask_position='before_act'``, else None."""
        if self.mask_position != 'before_act':
            return None
        return partial(self.apply_mask, group=group)


RunSpec = Union[SubnetSpec, MaskedRouting]
"""What the layers of a forward run at (their ``spec`` argument): one
sub-network, or per-sample routing (the window's widest widths with masks).
Both give a width per group (``spec[group]``), the BN statistics
(``spec.stats``) and the masking hooks (``spec.mask``,
``spec.pre_act_mask``), which a sub-network leaves as no-ops."""


def route_weights(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Training's routing weights from gate logits: a straight-through
    Gumbel-softmax sample (hard one-hot forward, soft gradient), so the task
    loss reaches the gate. Inference routes by the argmax, without noise
    (``DSGateClassifier.route``). Sampled in float32 (from bfloat16 logits
    under autocast too)."""
    return gumbel_route(logits, tau)[0]


def gumbel_route(logits: torch.Tensor,
                 tau: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A Gumbel-softmax sample of the routing, as
    ``F.gumbel_softmax(logits, tau, hard=True)`` draws it (the same noise
    from the same generator), in float32.

    Returns:
        tuple: ``[B, K]`` straight-through one-hot weights (the hard
        sample forward, the soft one's gradient: :func:`route_weights`)
        and the soft sample ``softmax((logits + gumbel noise) / tau)``
        itself, which the reference DS-Net code feeds to its SGS loss.
    """
    logits = logits.float()
    gumbels = -torch.empty_like(
        logits, memory_format=torch.legacy_contiguous_format).exponential_(
        ).log()
    soft = ((logits + gumbels) / tau).softmax(-1)
    index = soft.max(-1, keepdim=True)[1]
    hard = torch.zeros_like(
        logits, memory_format=torch.legacy_contiguous_format).scatter_(
            -1, index, 1.0)
    return hard - soft.detach() + soft, soft


SGS_CLASS_WEIGHTS = (None, 'balanced')
# what the SGS loss reads: the gate logits, or the soft Gumbel-softmax
# sample of gumbel_route (the reference DS-Net code's)
GATE_LOSS_INPUTS = ('logits', 'gumbel_probs')


def sgs_cross_entropy(gate_logits: torch.Tensor,
                      target: torch.Tensor,
                      label_smooth: float = 0.0,
                      class_weight: Optional[str] = None) -> torch.Tensor:
    """The SGS loss: label-smoothed cross-entropy of the gate logits against
    the gate targets (window positions; -100: ignored), in float32.

    Args:
        gate_logits (torch.Tensor): ``[B, window]``.
        target (torch.Tensor): ``[B]`` window positions or -100.
        label_smooth (float): Label smoothing. Defaults to 0.
        class_weight (str, optional): ``None``: the plain mean over the
            images (the reference); ``'balanced'``: each target present in
            the batch weighted by the inverse of its count (scikit-learn's
            ``class_weight='balanced'``), so that a rare target is not
            drowned by a common one. Defaults to None.
    """
    loss = F.cross_entropy(gate_logits.float(), target, ignore_index=-100,
                           reduction='none', label_smoothing=label_smooth)
    valid = target >= 0
    if class_weight is None:
        return loss[valid].mean()
    # w_i = n / (present targets * n_{t_i}): each target's mean loss,
    # averaged over the targets present in the batch
    count = torch.bincount(target[valid], minlength=gate_logits.shape[1])
    weight = valid.float() / count[target.clamp(min=0)].clamp(min=1)
    return (weight * loss).sum() / (count > 0).sum()


def budget_penalty(gate_logits: torch.Tensor, costs: torch.Tensor,
                   budget: float, steps: int = 60) -> float:
    """The cost penalty that spends ``budget`` on average over these images.

    Routing by ``argmax(gate_logits - penalty * costs)`` (``costs``: each
    window member's MAdds relative to the window's widest; see
    :func:`penalized_choice`) spends less the larger the penalty: each
    image's chosen cost is non-increasing in it. Bisection finds the
    smallest penalty whose mean relative cost is at most ``budget`` (the
    routing that spends the most within it), and the penalty returned lies
    halfway to the next one that changes that routing, away from the ties
    where a rounding error would flip an image. A negative penalty sends
    images wider than the gate alone would.

    Args:
        gate_logits (torch.Tensor): ``[N, K]`` gate logits.
        costs (torch.Tensor): ``[K]`` relative costs, ascending, last 1.
        budget (float): Mean relative cost to spend, in
            ``[costs[0], 1]``.
        steps (int): Bisection steps. Defaults to 60.

    Returns:
        float: The penalty.
    """
    lo_cost = float(costs[0])
    if not lo_cost <= budget <= 1:
        raise ValueError(f'budget must be in [{lo_cost:.4f}, 1] (the '
                         "window's narrowest and widest MAdds relative to "
                         f'the widest), got {budget}')
    costs = costs.double()
    if len(costs) > 1 and not bool((costs[1:] > costs[:-1]).all()):
        raise ValueError(f'costs must ascend strictly, got {costs.tolist()}')

    def choice(penalty: float) -> torch.Tensor:
        return penalized_choice(gate_logits, costs, penalty)

    def bisect(lo: float, hi: float, ok) -> float:
        """The smallest value in (lo, hi] where ``ok`` holds (it holds
        from there on)."""
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return hi

    # beyond +-bound every image is routed by cost alone: the logit gap
    # between any two members is below `span`, their costs at least `step`
    # apart
    logits = gate_logits.detach().double()
    span = float((logits.max(-1).values - logits.min(-1).values).max()) + 1
    step = float((costs[1:] - costs[:-1]).min()) if len(costs) > 1 else 1.
    bound = span / step
    first = bisect(-bound, bound,
                   lambda p: float(costs[choice(p)].mean()) <= budget)
    routed = choice(first)
    last = bisect(first, bound + 1,
                  lambda p: not torch.equal(choice(p), routed))
    return (first + last) / 2


def penalized_choice(gate_logits: torch.Tensor, costs: torch.Tensor,
                     penalty: float) -> torch.Tensor:
    """``argmax(gate_logits - penalty * costs)`` per image, in float64 so
    that fitting and routing take the same decisions."""
    return (gate_logits.detach().double() -
            penalty * costs.double()).argmax(-1)
