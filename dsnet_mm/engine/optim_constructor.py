# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The optimizer constructor of DS models: frozen parts summed up in one
line."""
import logging
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DSOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` (same ``paramwise_cfg``
    and the same parameter groups) that leaves wholly frozen modules out in
    silence and says so once.

    With a ``paramwise_cfg`` mmengine logs a warning for every parameter
    with ``requires_grad=False``: a Stage I model's EMA teacher (a frozen
    copy of the network, 135 tensors for DS-MobileNetV1) or the frozen
    supernet of Stage II would open every log with a screen of them. Here a
    module none of whose parameters is trainable is skipped as a whole
    (mmengine skips each of its parameters anyway), and one line counts the
    frozen parameters by top-level module. A module that mixes trainable and
    frozen parameters still gets mmengine's warning for each frozen one.

    Use it by ``optim_wrapper=dict(constructor='DSOptimWrapperConstructor',
    ...)``.
    """

    def __call__(self, model: nn.Module):
        module = model.module if hasattr(model, 'module') else model
        if self.paramwise_cfg:
            self._log_frozen(module)
        return super().__call__(model)

    @staticmethod
    def _log_frozen(model: nn.Module) -> None:
        counts = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                top = name.split('.', 1)[0]
                counts[top] = counts.get(top, 0) + 1
        if counts:
            parts = ', '.join(f'{k}: {v}' for k, v in counts.items())
            print_log(f'{sum(counts.values())} frozen parameters '
                      f'(requires_grad=False) left out of the optimizer '
                      f'({parts})', logger='current', level=logging.INFO)

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[int] = None) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return  # nothing to optimise: counted by _log_frozen
        super().add_params(params, module, prefix, is_dcn_module)
