# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Mixed precision: bfloat16 autocast on the CPU, and the optimizer wrapper
that ``tools/train.py --amp`` picks for the machine's device."""
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
# the optimizer wrapper is built in the root registry's scope tree, so one
# registered here is found from mmpretrain's scope and mmdet's alike
from mmengine.registry import OPTIM_WRAPPERS

from dsnet_mm.ops.utils import check_choice

AMP_DEVICES = ('cuda', 'npu', 'mlu', 'musa')
"""Devices on which ``--amp`` uses mmengine's ``AmpOptimWrapper`` (float16
autocast with dynamic loss scaling)."""
GPU_ONLY_KEYS = ('loss_scale', 'use_fsdp')
"""``AmpOptimWrapper`` keys that have no meaning for bfloat16 autocast."""


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose :meth:`optim_context` runs the forward under
    ``torch.autocast('cpu', dtype=torch.bfloat16)``: mixed precision
    training on the CPU.

    mmengine's ``AmpOptimWrapper`` needs a CUDA, NPU, MLU or MUSA device;
    this is its CPU counterpart. Within the context convolutions, linear
    layers and matrix products run in bfloat16 (autocast's CPU op lists);
    the parameters, their gradients and the optimizer's state stay float32.
    bfloat16 keeps float32's exponent range, so the gradients cannot
    underflow as float16's do and need no loss scaling: ``backward`` and
    ``step`` are ``OptimWrapper``'s. The DS models compute their soft
    targets and losses from float32 logits within the context.

    Args:
        dtype (str): The autocast data type; CPU autocast supports only
            ``'bfloat16'``. Defaults to ``'bfloat16'``.
        **kwargs: Passed to ``OptimWrapper`` (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16',
                 **kwargs) -> None:
        if dtype is torch.bfloat16:
            dtype = 'bfloat16'
        check_choice('optim_wrapper.dtype', dtype, ('bfloat16', ))
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """``OptimWrapper``'s context (no gradient synchronisation while
        gradients accumulate) within bfloat16 autocast on the CPU.

        Args:
            model (nn.Module): The training model.
        """
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper(cfg: dict, device: Optional[str] = None) -> dict:
    """The ``optim_wrapper`` config of a mixed-precision run on ``device``.

    On a CUDA, NPU, MLU or MUSA device (:data:`AMP_DEVICES`) the type is
    mmengine's ``AmpOptimWrapper`` (float16 autocast, ``loss_scale``
    defaulting to ``'dynamic'``); on the CPU it is
    :class:`CPUAmpOptimWrapper` (bfloat16 autocast). The config's other keys
    (``optimizer``, ``paramwise_cfg``, ``clip_grad``, ...) are kept.

    Args:
        cfg (dict): The config's ``optim_wrapper`` (not modified).
        device (str, optional): ``'cuda'``, ``'cpu'``, ... Defaults to
            mmengine's ``get_device()``, the device the runner trains on.

    Returns:
        dict: The new ``optim_wrapper`` config.

    Raises:
        ValueError: ``device`` has no mixed precision (e.g. ``'mps'``), or
            on the CPU the config sets a key that only the GPU wrapper
            takes (``loss_scale``, ``use_fsdp``) or a ``dtype`` other than
            ``'bfloat16'``. The message names ``--amp`` and what to do.
    """
    device = get_device() if device is None else device
    cfg = dict(cfg)
    if device in AMP_DEVICES:
        cfg['type'] = 'AmpOptimWrapper'
        cfg.setdefault('loss_scale', 'dynamic')
        return cfg
    if device != 'cpu':
        raise ValueError(
            f'--amp trains with float16 autocast on a device of '
            f'{AMP_DEVICES} or with bfloat16 autocast on the CPU; this '
            f'machine trains on {device!r}, which has neither: run without '
            '--amp')
    for key in GPU_ONLY_KEYS:
        if key in cfg:
            raise ValueError(
                f'--amp on the CPU trains with bfloat16 autocast, which '
                f'takes no optim_wrapper.{key} (got {cfg[key]!r}; it is for '
                "mmengine's AmpOptimWrapper on a GPU): remove it from the "
                'config, run without --amp, or train on a GPU')
    dtype = cfg.get('dtype', 'bfloat16')
    if dtype not in ('bfloat16', torch.bfloat16):
        raise ValueError(
            f"--amp on the CPU autocasts to 'bfloat16' only, got "
            f"optim_wrapper.dtype={dtype!r}: set it to 'bfloat16' or remove "
            'it, run without --amp, or train on a GPU')
    cfg['type'] = 'CPUAmpOptimWrapper'
    return cfg
