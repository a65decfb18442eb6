# Copyright (c) dsnet_mm contributors. All rights reserved.
from .bn_calibration import calibrate_bn
from .builder import build_model_from_cfg
from .checkpoint import (AtomicLocalBackend, register_atomic_backend,
                         register_safe_globals, safe_globals)
from .hooks import CheckpointMatchHook, DDPConsistencyHook, RandomStateHook
from .loops import SubnetTestLoop, SubnetValLoop
from .model_wrapper import DSDistributedDataParallel

__all__ = [
    'build_model_from_cfg', 'calibrate_bn', 'register_safe_globals',
    'safe_globals', 'SubnetValLoop', 'SubnetTestLoop',
    'DSDistributedDataParallel', 'DDPConsistencyHook', 'RandomStateHook',
    'CheckpointMatchHook', 'AtomicLocalBackend', 'register_atomic_backend'
]

register_safe_globals()
register_atomic_backend()
