# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks for deployment (and as the speed limit of slicing)."""
from .static_mbnet import (StaticMobileNetV1, fold_conv_bn,
                           static_mobilenet_v1)

__all__ = ['StaticMobileNetV1', 'fold_conv_bn', 'static_mobilenet_v1']
