# Copyright (c) dsnet_mm contributors. All rights reserved.
from . import backbones, classifiers, gates, heads, losses  # noqa: F401
from .data_preprocessor import MultiViewClsDataPreprocessor
from .subnet import SubnetSpace, SubnetSpec

__all__ = ['SubnetSpace', 'SubnetSpec', 'MultiViewClsDataPreprocessor']

try:  # mmdet is the optional 'det' extra (tools/setup_env.sh installs it)
    from . import detectors  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != 'mmdet':
        raise
