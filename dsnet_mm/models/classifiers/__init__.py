# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_gate_classifier import DSGateClassifier
from .ds_image_classifier import DSImageClassifier

__all__ = ['DSImageClassifier', 'DSGateClassifier']
