# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DDP for DS models: their own multi-forward ``train_step``, CPU or GPU."""
from typing import Dict

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
# the Runner looks wrappers up in the root registry, not in the default scope
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DSDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that runs the DS model's ``train_step``.

    mmengine's wrapper runs one ``forward(mode='loss')`` per iteration and
    never calls the module's ``train_step``, which would silently replace the
    sandwich (Stage I) or SGS (Stage II) step by a plain one. Here the
    module's step runs, and each of its forwards goes through the wrapper so
    DDP reduces the gradients of every sub-network pass. Every rank samples
    the same sub-networks (the sampler is seeded by the iteration). Modules
    on the CPU get ``device_ids=None`` (gloo), as DDP requires.

    Use it with ``model_wrapper_cfg=dict(type='DSDistributedDataParallel',
    find_unused_parameters=True)``: a pass leaves the slices and heads it
    does not use without gradient.
    """

    def __init__(self, module: torch.nn.Module, **kwargs) -> None:
        if next(module.parameters()).device.type == 'cpu':
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        super().__init__(module=module, **kwargs)

    def train_step(self, data: dict,
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        return self.module.train_step(data, optim_wrapper, forward=self)
