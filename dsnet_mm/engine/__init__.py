# Copyright (c) dsnet_mm contributors. All rights reserved.
from .amp import CPUAmpOptimWrapper, amp_optim_wrapper
from .bn_calibration import (CalibrationSampler, build_calibration_dataloader,
                             calibrate_bn)
from .budget import RoutingBudgetHook
from .builder import build_model_from_cfg
from .checkpoint import (AtomicLocalBackend, latest_checkpoint,
                         register_atomic_backend, register_safe_globals,
                         safe_globals)
from .hooks import CheckpointMatchHook, DDPConsistencyHook, RandomStateHook
from .loops import SubnetTestLoop, SubnetValLoop
from .model_wrapper import DSDistributedDataParallel
from .optim_constructor import DSOptimWrapperConstructor
from .train_loop import ResumableEpochBasedTrainLoop

__all__ = [
    'build_model_from_cfg', 'calibrate_bn', 'build_calibration_dataloader',
    'CalibrationSampler', 'register_safe_globals',
    'safe_globals', 'SubnetValLoop', 'SubnetTestLoop',
    'DSDistributedDataParallel', 'DDPConsistencyHook', 'RandomStateHook',
    'CheckpointMatchHook', 'AtomicLocalBackend', 'register_atomic_backend',
    'RoutingBudgetHook', 'latest_checkpoint', 'ResumableEpochBasedTrainLoop',
    'CPUAmpOptimWrapper', 'amp_optim_wrapper', 'DSOptimWrapperConstructor'
]

register_safe_globals()
register_atomic_backend()
