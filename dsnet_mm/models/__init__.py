# Copyright (c) dsnet_mm contributors. All rights reserved.
from . import backbones, classifiers, gates, heads, losses  # noqa: F401
from .subnet import SubnetSpace, SubnetSpec

__all__ = ['SubnetSpace', 'SubnetSpec']
