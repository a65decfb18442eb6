# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS detectors, registered in mmdet's model registry."""
from .ds_gate_detector import DSGateDetector
from .ds_single_stage import DSSingleStageDetector, pad_to

__all__ = ['DSSingleStageDetector', 'DSGateDetector', 'pad_to']
