# Copyright (c) dsnet_mm contributors. All rights reserved.
"""What every DS backbone shares: the active sub-network, the gate check,
the input check and mmpretrain's ``train(mode)`` conventions."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch

from dsnet_mm.ops import DSBatchNorm2d
from ..subnet import SubnetSpace, SubnetSpec

SubnetKey = Union[int, str, SubnetSpec]


class DSBackboneMixin:
    """Mixin of a DS backbone (put it before ``BaseBackbone`` in the bases).

    The backbone holds the active sub-network, which persists across
    forwards and is passed explicitly to every layer; it starts as the
    largest. A subclass sets ``self.space`` (a
    :class:`~dsnet_mm.models.subnet.SubnetSpace`), ``self._active``,
    ``self.in_channels``, ``self.norm_eval`` and implements
    ``_freeze_stages``.
    """

    space: SubnetSpace
    in_channels: int
    norm_eval: bool

    # --- the active sub-network -----------------------------------------
    @property
    def active_subnet(self) -> SubnetSpec:
        return self._active

    def set_subnet(self, key: SubnetKey) -> SubnetSpec:
        """Make a sub-network (index, name or spec) the active one."""
        self._active = self.space.get(key)
        return self._active

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Run the block with a sub-network active, then restore the old."""
        previous = self._active
        try:
            yield self.set_subnet(key)
        finally:
            self._active = previous

    # --- checks ---------------------------------------------------------
    def _check_gate(self, gate: Optional[dict], stages: Sequence[str],
                    groups_before: Sequence[Sequence[str]]
                    ) -> Tuple[Optional[int], List[SubnetSpec]]:
        """(index of the gated stage, routing window) from the gate config.

        Args:
            gate (dict, optional): ``dict(stage=..., window=(start, size))``.
            stages (Sequence[str]): The stage names a gate may name.
            groups_before (Sequence[Sequence[str]]): For each stage, the
                width groups of every layer that runs before its first block:
                the window's sub-networks must agree on all of them.
        """
        if gate is None:
            return None, []
        unknown = set(gate) - {'stage', 'window'}
        if unknown or 'stage' not in gate or 'window' not in gate:
            raise ValueError("gate needs exactly the keys 'stage' and "
                             f"'window', got {sorted(gate)}")
        stages = list(stages)
        if gate['stage'] not in stages:
            raise ValueError(f"gate.stage={gate['stage']!r} is not a stage; "
                             f'allowed: {stages}')
        stage = stages.index(gate['stage'])
        window = gate['window']
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise ValueError('gate.window must be a pair (start, size), got '
                             f'{window!r}')
        start, size = window
        n = len(self.space)
        if size < 1 or start < 0 or start + size > n:
            raise ValueError(
                f'gate.window=({start}, {size}) must lie in the '
                f'sub-network list 0..{n - 1} (start >= 0, size >= 1)')
        specs = self.space.subnets[start:start + size]
        for group in groups_before[stage]:
            widths = sorted({s[group] for s in specs})
            if len(widths) > 1:
                raise ValueError(
                    f'gate.window=({start}, {size}) mixes widths {widths} of '
                    f'group {group!r}, which runs before the gate in '
                    f"{gate['stage']!r}: the window's sub-networks must "
                    'share every group before the gate')
        return stage, specs

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects images of shape (N, '
                f'{self.in_channels}, H, W) (in_channels={self.in_channels}),'
                f' got {tuple(x.shape)}')

    # --- mmpretrain conventions ----------------------------------------
    def train(self, mode: bool = True):
        """Train mode, keeping frozen stages (and with ``norm_eval`` every
        BN) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, DSBatchNorm2d):
                    m.eval()
        return self
