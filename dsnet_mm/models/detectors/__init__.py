# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS detectors, registered in mmdet's model registry."""
from .ds_gate_detector import DSGateDetector
from .ds_sgs_detector import DSSGSDetector
from .ds_single_stage import DSSingleStageDetector
from .ds_two_stage import DSTwoStageDetector
from .sandwich import SandwichDetectorMixin, pad_to

__all__ = [
    'DSSingleStageDetector', 'DSGateDetector', 'DSSGSDetector',
    'DSTwoStageDetector', 'SandwichDetectorMixin', 'pad_to'
]
