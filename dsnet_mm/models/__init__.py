# Copyright (c) dsnet_mm contributors. All rights reserved.
from . import backbones, classifiers, heads, losses  # noqa: F401 (register)
from .subnet import SubnetSpace, SubnetSpec

__all__ = ['SubnetSpace', 'SubnetSpec']
