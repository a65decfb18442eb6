# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_linear_head import DSLinearClsHead

__all__ = ['DSLinearClsHead']
