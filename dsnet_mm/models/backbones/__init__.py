# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_mobilenet_v1 import DSMobileNetV1

__all__ = ['DSMobileNetV1']
