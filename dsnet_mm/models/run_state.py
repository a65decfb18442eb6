# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Which network a DS model runs, said one way for the four models
(``DSImageClassifier``, ``DSGateClassifier``, the DS detectors).

The backbone holds the active sub-network (the largest unless set); a model
runs it in mmpretrain's and mmdet's modes. A gated model routes each image
to a sub-network of its window instead, except within :meth:`subnet`, which
is the one way to say "run this sub-network, do not route". Every model's
``forward`` has one signature::

    forward(inputs, data_samples=None, mode='tensor', spec=None)

- ``mode``: mmpretrain's or mmdet's ``'tensor'``, ``'loss'``,
  ``'predict'``, or one of the model's ``extra_modes``, each run by its
  method ``_forward_<mode>(inputs, data_samples)``:

  - ``'dropout'`` (``DSImageClassifier``): the logits with the classifier's
    ``largest_dropout`` before the head, what Stage I's largest member
    trains on;
  - ``'sgs'`` (``DSGateClassifier``, ``DSSGSDetector``): Stage II's forward,
    the gate's outputs and its targets for the labels or boxes in
    ``data_samples``.

- ``spec``: run that sub-network in any mode, as within :meth:`subnet`
  (no routing).

The training steps call their forwards through this method so that, under
DDP, they run through the wrapper and gradients are reduced.
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch

from .subnet import SubnetKey, SubnetSpec


class SubnetRunMixin:
    """The run state of a DS model (see the module notes). Put it before the
    mmpretrain or mmdet base class; the model's backbone is a DS backbone.
    """

    extra_modes: Tuple[str, ...] = ()

    @property
    def space(self):
        """The backbone's :class:`~dsnet_mm.models.subnet.SubnetSpace`."""
        return self.backbone.space

    @property
    def active_subnet(self) -> SubnetSpec:
        """The backbone's active sub-network."""
        return self.backbone.active_subnet

    def set_subnet(self, key: SubnetKey) -> SubnetSpec:
        """Make a sub-network (index, name or spec) the backbone's active
        one."""
        return self.backbone.set_subnet(key)

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Within the block the model runs sub-network ``key`` (index, name
        or spec) for every image, without routing; the active sub-network
        comes back afterwards."""
        with self.backbone.subnet(key) as spec:
            yield spec

    def forward(self,
                inputs: torch.Tensor,
                data_samples=None,
                mode: str = 'tensor',
                spec: Optional[SubnetSpec] = None):
        """The model's ``mode`` (mmpretrain's or mmdet's, or one of
        ``extra_modes``), at sub-network ``spec`` where given (see the
        module notes)."""
        if spec is None:
            return self._run_mode(inputs, data_samples, mode)
        with self.subnet(spec):
            return self._run_mode(inputs, data_samples, mode)

    def _run_mode(self, inputs: torch.Tensor, data_samples, mode: str):
        if mode in self.extra_modes:
            return getattr(self, f'_forward_{mode}')(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)
