# Copyright (c) dsnet_mm contributors. All rights reserved.
from .bn_calibration import calibrate_bn
from .loops import SubnetTestLoop, SubnetValLoop

__all__ = ['calibrate_bn', 'SubnetValLoop', 'SubnetTestLoop']
