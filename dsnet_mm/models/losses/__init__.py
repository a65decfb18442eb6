# Copyright (c) dsnet_mm contributors. All rights reserved.
from .soft_target_ce import SoftTargetCrossEntropy

__all__ = ['SoftTargetCrossEntropy']
