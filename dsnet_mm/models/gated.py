# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-image routing by the gate in a DS backbone, shared by the dynamic
classifier and the dynamic detector.

Both run the backbone up to the gate once for the whole batch, let the gate
pick a window position per image and run the rest of the network by one of
:data:`ROUTING_MODES` (see :mod:`dsnet_mm.models.routing`). They differ only
in what "the rest" returns: class logits for the classifier, the backbone's
outputs zero-padded to the widest widths for the detector (whose neck and
head then run once on the whole batch). A model using
:class:`GatedRoutingMixin` implements ``_pre_gate(inputs)`` and
``_run_window(h, early, spec)``; the latter returns a tensor or a tuple of
tensors whose first dimension is the batch.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from dsnet_mm.ops.utils import check_choice, check_float
from .gates import DSGate
from .routing import (MASK_POSITIONS, MaskedRouting, budget_penalty,
                      penalized_choice, route_weights)
from .run_state import SubnetRunMixin
from .subnet import SubnetKey, SubnetSpec
from .subnet_table import subnet_complexity

ROUTING_MODES = ('slice', 'bucket', 'mask')

Outputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def _as_tuple(out: Outputs) -> Tuple[torch.Tensor, ...]:
    return (out, ) if isinstance(out, torch.Tensor) else tuple(out)


def _like(template: Outputs, parts: Tuple[torch.Tensor, ...]) -> Outputs:
    return parts[0] if isinstance(template, torch.Tensor) else parts


def check_routing(routing_mode: str, tau: float = 1.0,
                  mask_position: str = 'after_act') -> None:
    """Validate the routing arguments (before a model is built, so that a
    bad value fails fast)."""
    check_choice('routing_mode', routing_mode, ROUTING_MODES)
    check_float('tau', tau, 0, low_open=True)
    check_choice('mask_position', mask_position, MASK_POSITIONS)


class GatedRoutingMixin(SubnetRunMixin):
    """The gate, the routing decision and the three routing paths.

    Put it before the model class in the bases and call
    :meth:`_init_routing` at the end of ``__init__``. The model holds a DS
    backbone with a gate (``backbone.gate=dict(stage=..., window=...)``).

    **MAdds budget.** Inference routes by ``argmax(logits - cost_penalty *
    relative MAdds)`` (:meth:`route`); ``cost_penalty`` (a buffer, 0 unless
    fitted, saved with the checkpoint) is set by :meth:`fit_budget`.

    **MAdds per image** of a window member (:meth:`window_madds`) are its
    static sub-network's (:func:`~dsnet_mm.models.subnet_table.subnet_complexity`: for
    a detector backbone, neck and head, no post-processing) plus the gate's
    slimming head, at the input shape of the batch.
    """

    def _init_routing(self, routing_mode: str, tau: float = 1.0,
                      mask_position: str = 'after_act') -> None:
        """Check and keep the routing arguments: ``routing_mode`` (the
        inference path), ``tau`` (the Gumbel-softmax temperature of
        training) and ``mask_position`` (where the mask path zeroes the
        channels, see :class:`~dsnet_mm.models.routing.MaskedRouting`;
        the backbone's ``mask_positions`` must list it)."""
        check_routing(routing_mode, tau, mask_position)
        if not getattr(self.backbone, 'gated', False):
            raise ValueError(
                f'{type(self).__name__} needs a DS backbone with a gate: set '
                "backbone.gate=dict(stage=..., window=(start, size))")
        allowed = getattr(self.backbone, 'mask_positions', ('after_act', ))
        if mask_position not in allowed:
            raise ValueError(
                f'mask_position={mask_position!r} is not one of {allowed}, '
                f'where {type(self.backbone).__name__} can mask')
        gates = [n for n, m in self.backbone.named_modules()
                 if isinstance(m, DSGate)]
        if len(gates) != 1:
            raise ValueError(f'the backbone must hold exactly one DSGate, '
                             f'found {len(gates)}: {gates}')
        self._gate_name = gates[0]
        self.routing_mode = routing_mode
        self.tau = tau
        self.mask_position = mask_position
        self._routing_off = False
        self._window_madds: Dict[Tuple[int, ...], List[int]] = {}
        # float64: the penalty is fitted to sit between two routings
        self.register_buffer('cost_penalty',
                             torch.zeros((), dtype=torch.float64))

    def _apply(self, fn, *args, **kwargs):
        """Moves and conversions keep ``cost_penalty`` in float64 with its
        value: ``model.half()`` or a float64 round trip (``.double()``,
        ``.float()``) would otherwise round the fitted penalty and flip
        the images it was fitted to separate."""
        penalty = self.cost_penalty
        out = super()._apply(fn, *args, **kwargs)
        if self.cost_penalty.dtype != torch.float64:
            self.cost_penalty = penalty.to(self.cost_penalty.device,
                                           torch.float64, copy=True)
        return out

    @property
    def window(self) -> List[SubnetSpec]:
        return self.backbone.window

    @property
    def gate(self) -> DSGate:
        return self.backbone.get_submodule(self._gate_name)

    @property
    def gate_prefix(self) -> str:
        return f'backbone.{self._gate_name}.slim_head.'

    # --- cost of each choice ------------------------------------------
    def window_madds(self, shape) -> List[int]:
        """MAdds per image of each sub-network of the window at image shape
        ``(C, H, W)`` (cached per shape)."""
        shape = tuple(shape)
        if shape not in self._window_madds:
            rows = subnet_complexity(self, self.window, shape)
            # the gate reads the features entering the gated block
            param = next(self.parameters())
            with torch.no_grad():
                h = self.backbone.forward_pre_gate(
                    param.new_zeros(1, *shape))[0]
            gate_cost = self.gate.head_madds(
                self.backbone.gate_input_width(h))
            self._window_madds[shape] = [r['madds'] + gate_cost for r in rows]
        return self._window_madds[shape]

    def relative_costs(self, shape) -> torch.Tensor:
        """``[window]``: each window member's MAdds over the widest's."""
        madds = torch.tensor(self.window_madds(shape), dtype=torch.float64)
        return madds / madds[-1]

    # --- the decision --------------------------------------------------
    def route(self, gate_logits: torch.Tensor, shape) -> torch.Tensor:
        """The window position of each image at inference: the argmax of
        the gate logits less the budget's cost penalty."""
        if not self.cost_penalty:
            return gate_logits.argmax(-1)
        return penalized_choice(gate_logits, self.relative_costs(shape),
                                float(self.cost_penalty))

    def fit_budget(self, gate_logits: torch.Tensor, shape,
                   budget: float) -> float:
        """Set ``cost_penalty`` so that routing these gate logits (of
        images of ``shape``) spends ``budget`` times the window's widest
        MAdds on average (see :func:`~dsnet_mm.models.routing.
        budget_penalty`); returns the mean relative MAdds reached."""
        costs = self.relative_costs(shape)
        self.cost_penalty.fill_(budget_penalty(gate_logits, costs, budget))
        return float(costs[self.route(gate_logits, shape)].mean())

    def _check_routes(self, routes: torch.Tensor, n: int) -> torch.Tensor:
        """``routes`` if it is a long tensor of ``n`` window positions."""
        last = len(self.window) - 1
        ok = isinstance(routes, torch.Tensor) and \
            routes.shape == (n, ) and routes.dtype == torch.long
        if ok and n:
            ok = 0 <= int(routes.min()) and int(routes.max()) <= last
        if not ok:
            what = f'shape {list(routes.shape)} of {routes.dtype}' \
                if isinstance(routes, torch.Tensor) else repr(routes)
            raise ValueError(
                f'routes must be a long tensor of {n} window positions in '
                f'0..{last} (not sub-network indices), got {what}')
        return routes

    # --- the three paths ---------------------------------------------
    def forward_dynamic(
        self,
        inputs: torch.Tensor,
        mode: Optional[str] = None,
        routes: Optional[torch.Tensor] = None
    ) -> Tuple[Outputs, torch.Tensor, torch.Tensor]:
        """Run each image at its routed sub-network.

        Args:
            inputs (torch.Tensor): Images ``[B, C, H, W]``.
            mode (str, optional): :data:`ROUTING_MODES` member. Defaults to
                ``routing_mode``.
            routes (torch.Tensor, optional): ``[B]`` window positions that
                replace the gate's choice (e.g. a fixed routing mix for
                benchmarking). Defaults to None (the gate routes).

        Returns:
            tuple: what ``_run_window`` returns for the whole batch (class
            logits; a detector's padded backbone outputs), gate logits
            ``[B, window]`` and the chosen window position of each image.
        """
        mode = self.routing_mode if mode is None else mode
        check_choice('mode', mode, ROUTING_MODES)
        h, gate_logits, early = self._pre_gate(inputs)
        if routes is None:
            choice = self.route(gate_logits, inputs.shape[1:])
        else:
            choice = self._check_routes(routes, inputs.shape[0]).to(
                gate_logits.device)
        if mode == 'mask':
            # in training a Gumbel sample, so that gradients reach the gate
            weights = route_weights(gate_logits, self.tau) \
                if self.training and routes is None else F.one_hot(
                    choice, len(self.window)).to(gate_logits)
            out = self._run_window(
                h, early,
                MaskedRouting(self.window, weights, self.mask_position))
            return out, gate_logits, weights.argmax(-1)
        if mode == 'slice':
            outs = [
                self._run_window(h[b:b + 1], [e[b:b + 1] for e in early],
                                 self.window[int(choice[b])])
                for b in range(h.shape[0])
            ]
            if len(outs) == 1:  # batch 1: no copy
                return outs[0], gate_logits, choice
            merged = tuple(torch.cat(parts)
                           for parts in zip(*map(_as_tuple, outs)))
            return _like(outs[0], merged), gate_logits, choice
        template, merged = None, None
        for k in choice.unique().tolist():
            sel = (choice == k).nonzero().flatten()
            out = self._run_window(h[sel], [e[sel] for e in early],
                                   self.window[k])
            if merged is None:
                template = out
                merged = tuple(o.new_empty(h.shape[0], *o.shape[1:])
                               for o in _as_tuple(out))
            for dst, src in zip(merged, _as_tuple(out)):
                dst[sel] = src
        return _like(template, merged), gate_logits, choice

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Within the block ``predict`` runs sub-network ``key`` for every
        image: no routing (the per-sub-network evaluation of a gated
        model)."""
        previous = self._routing_off
        self._routing_off = True
        try:
            with super().subnet(key) as spec:
                yield spec
        finally:
            self._routing_off = previous
